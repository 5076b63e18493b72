# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_mcpgate_global_optspecs
    string join \n h/help V/version
end

function __fish_mcpgate_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_mcpgate_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_mcpgate_using_subcommand
    set -l cmd (__fish_mcpgate_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c mcpgate -n "__fish_mcpgate_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mcpgate -n "__fish_mcpgate_needs_command" -s V -l version -d 'Print version'
complete -c mcpgate -n "__fish_mcpgate_needs_command" -f -a "login" -d 'Sign in to a broker and keep the token in the OS keyring (or a 0600 file)'
complete -c mcpgate -n "__fish_mcpgate_needs_command" -f -a "logout" -d 'Forget the token and the broker settings on this machine'
complete -c mcpgate -n "__fish_mcpgate_needs_command" -f -a "status" -d 'Show who you are logged in as, at which broker, and until when'
complete -c mcpgate -n "__fish_mcpgate_needs_command" -f -a "servers" -d 'List the MCP servers you may connect to'
complete -c mcpgate -n "__fish_mcpgate_needs_command" -f -a "connect" -d 'Relay MCP between stdin/stdout and a server, through the broker'
complete -c mcpgate -n "__fish_mcpgate_needs_command" -f -a "approvals" -d 'List the approval requests you may decide, and your own'
complete -c mcpgate -n "__fish_mcpgate_needs_command" -f -a "approve" -d 'Approve a held call or an access request'
complete -c mcpgate -n "__fish_mcpgate_needs_command" -f -a "deny" -d 'Deny a held call or an access request'
complete -c mcpgate -n "__fish_mcpgate_needs_command" -f -a "request-access" -d 'Ask for access to a server for a while; an approver must grant it'
complete -c mcpgate -n "__fish_mcpgate_needs_command" -f -a "grants" -d 'List access grants, live and expired, newest first'
complete -c mcpgate -n "__fish_mcpgate_needs_command" -f -a "sessions" -d 'List recorded sessions, newest first'
complete -c mcpgate -n "__fish_mcpgate_needs_command" -f -a "replay" -d 'Show a recorded session as a timeline'
complete -c mcpgate -n "__fish_mcpgate_needs_command" -f -a "audit" -d 'Verify, export and report on session records (auditors)'
complete -c mcpgate -n "__fish_mcpgate_needs_command" -f -a "completions" -d 'Print a shell completion script to stdout'
complete -c mcpgate -n "__fish_mcpgate_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand login" -l broker -d 'The broker\'s HTTPS URL, e.g. https://mcpgate.example.com:8443' -r -f
complete -c mcpgate -n "__fish_mcpgate_using_subcommand login" -l ca-cert -d 'PEM file with the CA that signed the broker\'s certificate; kept for later commands (default: the system\'s root certificates)' -r -F
complete -c mcpgate -n "__fish_mcpgate_using_subcommand login" -l user -d 'Your user name at the broker, for a password login; without it, mcpgate logs in with the broker\'s OpenID Provider' -r
complete -c mcpgate -n "__fish_mcpgate_using_subcommand login" -l issuer -d 'The OpenID Provider to log in with: the broker\'s name for it or its issuer URL (default: the broker\'s first). With --ci and client credentials, any issuer URL the broker trusts' -r
complete -c mcpgate -n "__fish_mcpgate_using_subcommand login" -l token-file -d 'With --ci: a file holding the CI\'s OIDC token (default: MCPGATE_CI_TOKEN_FILE; MCPGATE_CI_TOKEN comes first)' -r -F
complete -c mcpgate -n "__fish_mcpgate_using_subcommand login" -l resource -d 'With --ci and client credentials: the resource indicator to ask the token for (default: MCPGATE_RESOURCE, else what the broker advertises)' -r
complete -c mcpgate -n "__fish_mcpgate_using_subcommand login" -l password-stdin -d 'Read the password from the first line of stdin (implied when stdin is not a terminal); needs --user'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand login" -l device -d 'Log in on another device: print a URL and a code to enter there (OAuth device authorization grant), for machines without a browser'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand login" -l no-browser -d 'Print the login URL but do not try to open a browser (also: MCPGATE_NO_BROWSER)'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand login" -l ci -d 'Log in without a browser from a CI token or client credentials (see the CI variables in mcpgate --help); keeps nothing unless --save'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand login" -l save -d 'With --ci: keep the token like a login (without a refresh token), so later commands use it until it expires'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand login" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand login" -s V -l version -d 'Print version'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand logout" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand logout" -s V -l version -d 'Print version'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand status" -s o -l output -d 'Output format on stdout' -r -f -a "text\t'For people'
json\t'For programs: one JSON document'"
complete -c mcpgate -n "__fish_mcpgate_using_subcommand status" -l check -d 'Also ask the broker whether the token is still good (renewing an OpenID Connect login first when it is due)'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand status" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand status" -s V -l version -d 'Print version'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand servers" -s o -l output -d 'Output format on stdout' -r -f -a "text\t'For people'
json\t'For programs: one JSON document'"
complete -c mcpgate -n "__fish_mcpgate_using_subcommand servers" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand servers" -s V -l version -d 'Print version'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand connect" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand connect" -s V -l version -d 'Print version'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand approvals" -l state -d 'Only requests in this state' -r -f -a "pending\t'Waiting for a decision'
approved\t''
denied\t''
expired\t'Nobody decided in time'
cancelled\t'The session ended or the client cancelled the call first'
all\t'Every state'"
complete -c mcpgate -n "__fish_mcpgate_using_subcommand approvals" -s o -l output -d 'Output format on stdout' -r -f -a "text\t'For people'
json\t'For programs: one JSON document'"
complete -c mcpgate -n "__fish_mcpgate_using_subcommand approvals" -l all -d 'Requests in every state, not only pending ones (same as --state all)'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand approvals" -s w -l watch -d 'Keep running and print new requests and changes as they happen, until Ctrl-C'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand approvals" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand approvals" -s V -l version -d 'Print version'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand approve" -l reason -d 'Why; recorded with the decision and shown to the requester' -r
complete -c mcpgate -n "__fish_mcpgate_using_subcommand approve" -s o -l output -d 'Output format on stdout' -r -f -a "text\t'For people'
json\t'For programs: one JSON document'"
complete -c mcpgate -n "__fish_mcpgate_using_subcommand approve" -s y -l yes -d 'Do not ask for confirmation (it is asked only when stdin is a terminal)'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand approve" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand approve" -s V -l version -d 'Print version'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand deny" -l reason -d 'Why; recorded with the decision and shown to the requester' -r
complete -c mcpgate -n "__fish_mcpgate_using_subcommand deny" -s o -l output -d 'Output format on stdout' -r -f -a "text\t'For people'
json\t'For programs: one JSON document'"
complete -c mcpgate -n "__fish_mcpgate_using_subcommand deny" -s y -l yes -d 'Do not ask for confirmation (it is asked only when stdin is a terminal)'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand deny" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand deny" -s V -l version -d 'Print version'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand request-access" -l duration -d 'For how long, e.g. 30m, 1h, 2h 30m (at most what your role allows)' -r
complete -c mcpgate -n "__fish_mcpgate_using_subcommand request-access" -l reason -d 'Why you need it; the approvers see it, and it is recorded' -r
complete -c mcpgate -n "__fish_mcpgate_using_subcommand request-access" -l wait -d 'Wait for the decision (exit 0 granted, 20 denied, 21 expired)'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand request-access" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand request-access" -s V -l version -d 'Print version'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand grants" -s o -l output -d 'Output format on stdout' -r -f -a "text\t'For people'
json\t'For programs: one JSON document'"
complete -c mcpgate -n "__fish_mcpgate_using_subcommand grants" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand grants" -s V -l version -d 'Print version'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand sessions" -l user -d 'Only this user\'s sessions (other users\' need a role with audit = true)' -r
complete -c mcpgate -n "__fish_mcpgate_using_subcommand sessions" -l server -d 'Only sessions to this server' -r
complete -c mcpgate -n "__fish_mcpgate_using_subcommand sessions" -l since -d 'Only sessions active at or after this time: 2026-05-01T18:00:00Z, 2026-05-01, or a span back from now like 2h or 7d' -r
complete -c mcpgate -n "__fish_mcpgate_using_subcommand sessions" -s o -l output -d 'Output format on stdout' -r -f -a "text\t'For people'
json\t'For programs: one JSON document'"
complete -c mcpgate -n "__fish_mcpgate_using_subcommand sessions" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand sessions" -s V -l version -d 'Print version'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand replay" -l speed -d 'Replay with the recorded timing divided by this: 1 is real time, 10 ten times faster (default: print at once)' -r
complete -c mcpgate -n "__fish_mcpgate_using_subcommand replay" -s o -l output -d 'Output format on stdout' -r -f -a "text\t'For people'
json\t'For programs: one JSON document'"
complete -c mcpgate -n "__fish_mcpgate_using_subcommand replay" -s f -l follow -d 'Keep going while the session is recorded, until it ends'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand replay" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand replay" -s V -l version -d 'Print version'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand audit; and not __fish_seen_subcommand_from verify export report help" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand audit; and not __fish_seen_subcommand_from verify export report help" -s V -l version -d 'Print version'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand audit; and not __fish_seen_subcommand_from verify export report help" -f -a "verify" -d 'Ask the broker to verify a session\'s record'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand audit; and not __fish_seen_subcommand_from verify export report help" -f -a "export" -d 'Export every recorded event in a period for a SIEM (audit role)'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand audit; and not __fish_seen_subcommand_from verify export report help" -f -a "report" -d 'Write the SOC 2 evidence report for a period (audit role)'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand audit; and not __fish_seen_subcommand_from verify export report help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand audit; and __fish_seen_subcommand_from verify" -s o -l output -d 'Output format on stdout' -r -f -a "text\t'For people'
json\t'For programs: one JSON document'"
complete -c mcpgate -n "__fish_mcpgate_using_subcommand audit; and __fish_seen_subcommand_from verify" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand audit; and __fish_seen_subcommand_from verify" -s V -l version -d 'Print version'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand audit; and __fish_seen_subcommand_from export" -l since -d 'Events from this time on: 2026-05-01T18:00:00Z, 2026-05-01, or a span back from now like 7d' -r
complete -c mcpgate -n "__fish_mcpgate_using_subcommand audit; and __fish_seen_subcommand_from export" -l until -d 'Events before this time (default: now)' -r
complete -c mcpgate -n "__fish_mcpgate_using_subcommand audit; and __fish_seen_subcommand_from export" -l format -d 'jsonl (one JSON object a line) or csv' -r -f -a "jsonl\t'One JSON object a line'
csv\t'CSV with a header line'"
complete -c mcpgate -n "__fish_mcpgate_using_subcommand audit; and __fish_seen_subcommand_from export" -s o -l out -d 'Write to FILE instead of stdout (kept as FILE.part until complete)' -r -F
complete -c mcpgate -n "__fish_mcpgate_using_subcommand audit; and __fish_seen_subcommand_from export" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand audit; and __fish_seen_subcommand_from export" -s V -l version -d 'Print version'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand audit; and __fish_seen_subcommand_from report" -l since -d 'The period\'s start: 2026-05-01T18:00:00Z, 2026-05-01, or a span back from now like 90d' -r
complete -c mcpgate -n "__fish_mcpgate_using_subcommand audit; and __fish_seen_subcommand_from report" -l until -d 'The period\'s end (default: now)' -r
complete -c mcpgate -n "__fish_mcpgate_using_subcommand audit; and __fish_seen_subcommand_from report" -l format -d 'md (Markdown) or html' -r -f -a "md\t'Markdown'
html\t'One self-contained HTML page'"
complete -c mcpgate -n "__fish_mcpgate_using_subcommand audit; and __fish_seen_subcommand_from report" -s o -l out -d 'Write to FILE instead of stdout' -r -F
complete -c mcpgate -n "__fish_mcpgate_using_subcommand audit; and __fish_seen_subcommand_from report" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand audit; and __fish_seen_subcommand_from report" -s V -l version -d 'Print version'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand audit; and __fish_seen_subcommand_from help" -f -a "verify" -d 'Ask the broker to verify a session\'s record'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand audit; and __fish_seen_subcommand_from help" -f -a "export" -d 'Export every recorded event in a period for a SIEM (audit role)'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand audit; and __fish_seen_subcommand_from help" -f -a "report" -d 'Write the SOC 2 evidence report for a period (audit role)'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand audit; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand completions" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand completions" -s V -l version -d 'Print version'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand help; and not __fish_seen_subcommand_from login logout status servers connect approvals approve deny request-access grants sessions replay audit completions help" -f -a "login" -d 'Sign in to a broker and keep the token in the OS keyring (or a 0600 file)'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand help; and not __fish_seen_subcommand_from login logout status servers connect approvals approve deny request-access grants sessions replay audit completions help" -f -a "logout" -d 'Forget the token and the broker settings on this machine'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand help; and not __fish_seen_subcommand_from login logout status servers connect approvals approve deny request-access grants sessions replay audit completions help" -f -a "status" -d 'Show who you are logged in as, at which broker, and until when'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand help; and not __fish_seen_subcommand_from login logout status servers connect approvals approve deny request-access grants sessions replay audit completions help" -f -a "servers" -d 'List the MCP servers you may connect to'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand help; and not __fish_seen_subcommand_from login logout status servers connect approvals approve deny request-access grants sessions replay audit completions help" -f -a "connect" -d 'Relay MCP between stdin/stdout and a server, through the broker'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand help; and not __fish_seen_subcommand_from login logout status servers connect approvals approve deny request-access grants sessions replay audit completions help" -f -a "approvals" -d 'List the approval requests you may decide, and your own'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand help; and not __fish_seen_subcommand_from login logout status servers connect approvals approve deny request-access grants sessions replay audit completions help" -f -a "approve" -d 'Approve a held call or an access request'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand help; and not __fish_seen_subcommand_from login logout status servers connect approvals approve deny request-access grants sessions replay audit completions help" -f -a "deny" -d 'Deny a held call or an access request'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand help; and not __fish_seen_subcommand_from login logout status servers connect approvals approve deny request-access grants sessions replay audit completions help" -f -a "request-access" -d 'Ask for access to a server for a while; an approver must grant it'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand help; and not __fish_seen_subcommand_from login logout status servers connect approvals approve deny request-access grants sessions replay audit completions help" -f -a "grants" -d 'List access grants, live and expired, newest first'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand help; and not __fish_seen_subcommand_from login logout status servers connect approvals approve deny request-access grants sessions replay audit completions help" -f -a "sessions" -d 'List recorded sessions, newest first'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand help; and not __fish_seen_subcommand_from login logout status servers connect approvals approve deny request-access grants sessions replay audit completions help" -f -a "replay" -d 'Show a recorded session as a timeline'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand help; and not __fish_seen_subcommand_from login logout status servers connect approvals approve deny request-access grants sessions replay audit completions help" -f -a "audit" -d 'Verify, export and report on session records (auditors)'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand help; and not __fish_seen_subcommand_from login logout status servers connect approvals approve deny request-access grants sessions replay audit completions help" -f -a "completions" -d 'Print a shell completion script to stdout'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand help; and not __fish_seen_subcommand_from login logout status servers connect approvals approve deny request-access grants sessions replay audit completions help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand help; and __fish_seen_subcommand_from audit" -f -a "verify" -d 'Ask the broker to verify a session\'s record'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand help; and __fish_seen_subcommand_from audit" -f -a "export" -d 'Export every recorded event in a period for a SIEM (audit role)'
complete -c mcpgate -n "__fish_mcpgate_using_subcommand help; and __fish_seen_subcommand_from audit" -f -a "report" -d 'Write the SOC 2 evidence report for a period (audit role)'
