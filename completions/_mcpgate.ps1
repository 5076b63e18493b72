
using namespace System.Management.Automation
using namespace System.Management.Automation.Language

Register-ArgumentCompleter -Native -CommandName 'mcpgate' -ScriptBlock {
    param($wordToComplete, $commandAst, $cursorPosition)

    $commandElements = $commandAst.CommandElements
    $command = @(
        'mcpgate'
        for ($i = 1; $i -lt $commandElements.Count; $i++) {
            $element = $commandElements[$i]
            if ($element -isnot [StringConstantExpressionAst] -or
                $element.StringConstantType -ne [StringConstantType]::BareWord -or
                $element.Value.StartsWith('-') -or
                $element.Value -eq $wordToComplete) {
                break
        }
        $element.Value
    }) -join ';'

    $completions = @(switch ($command) {
        'mcpgate' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('login', 'login', [CompletionResultType]::ParameterValue, 'Sign in to a broker and keep the token in the OS keyring (or a 0600 file)')
            [CompletionResult]::new('logout', 'logout', [CompletionResultType]::ParameterValue, 'Forget the token and the broker settings on this machine')
            [CompletionResult]::new('status', 'status', [CompletionResultType]::ParameterValue, 'Show who you are logged in as, at which broker, and until when')
            [CompletionResult]::new('servers', 'servers', [CompletionResultType]::ParameterValue, 'List the MCP servers you may connect to')
            [CompletionResult]::new('connect', 'connect', [CompletionResultType]::ParameterValue, 'Relay MCP between stdin/stdout and a server, through the broker')
            [CompletionResult]::new('approvals', 'approvals', [CompletionResultType]::ParameterValue, 'List the approval requests you may decide, and your own')
            [CompletionResult]::new('approve', 'approve', [CompletionResultType]::ParameterValue, 'Approve a held call or an access request')
            [CompletionResult]::new('deny', 'deny', [CompletionResultType]::ParameterValue, 'Deny a held call or an access request')
            [CompletionResult]::new('request-access', 'request-access', [CompletionResultType]::ParameterValue, 'Ask for access to a server for a while; an approver must grant it')
            [CompletionResult]::new('grants', 'grants', [CompletionResultType]::ParameterValue, 'List access grants, live and expired, newest first')
            [CompletionResult]::new('sessions', 'sessions', [CompletionResultType]::ParameterValue, 'List recorded sessions, newest first')
            [CompletionResult]::new('replay', 'replay', [CompletionResultType]::ParameterValue, 'Show a recorded session as a timeline')
            [CompletionResult]::new('audit', 'audit', [CompletionResultType]::ParameterValue, 'Verify, export and report on session records (auditors)')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print a shell completion script to stdout')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'mcpgate;login' {
            [CompletionResult]::new('--broker', '--broker', [CompletionResultType]::ParameterName, 'The broker''s HTTPS URL, e.g. https://mcpgate.example.com:8443')
            [CompletionResult]::new('--ca-cert', '--ca-cert', [CompletionResultType]::ParameterName, 'PEM file with the CA that signed the broker''s certificate; kept for later commands (default: the system''s root certificates)')
            [CompletionResult]::new('--user', '--user', [CompletionResultType]::ParameterName, 'Your user name at the broker, for a password login; without it, mcpgate logs in with the broker''s OpenID Provider')
            [CompletionResult]::new('--issuer', '--issuer', [CompletionResultType]::ParameterName, 'The OpenID Provider to log in with: the broker''s name for it or its issuer URL (default: the broker''s first). With --ci and client credentials, any issuer URL the broker trusts')
            [CompletionResult]::new('--token-file', '--token-file', [CompletionResultType]::ParameterName, 'With --ci: a file holding the CI''s OIDC token (default: MCPGATE_CI_TOKEN_FILE; MCPGATE_CI_TOKEN comes first)')
            [CompletionResult]::new('--resource', '--resource', [CompletionResultType]::ParameterName, 'With --ci and client credentials: the resource indicator to ask the token for (default: MCPGATE_RESOURCE, else what the broker advertises)')
            [CompletionResult]::new('--password-stdin', '--password-stdin', [CompletionResultType]::ParameterName, 'Read the password from the first line of stdin (implied when stdin is not a terminal); needs --user')
            [CompletionResult]::new('--device', '--device', [CompletionResultType]::ParameterName, 'Log in on another device: print a URL and a code to enter there (OAuth device authorization grant), for machines without a browser')
            [CompletionResult]::new('--no-browser', '--no-browser', [CompletionResultType]::ParameterName, 'Print the login URL but do not try to open a browser (also: MCPGATE_NO_BROWSER)')
            [CompletionResult]::new('--ci', '--ci', [CompletionResultType]::ParameterName, 'Log in without a browser from a CI token or client credentials (see the CI variables in mcpgate --help); keeps nothing unless --save')
            [CompletionResult]::new('--save', '--save', [CompletionResultType]::ParameterName, 'With --ci: keep the token like a login (without a refresh token), so later commands use it until it expires')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'mcpgate;logout' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'mcpgate;status' {
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format on stdout')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format on stdout')
            [CompletionResult]::new('--check', '--check', [CompletionResultType]::ParameterName, 'Also ask the broker whether the token is still good (renewing an OpenID Connect login first when it is due)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'mcpgate;servers' {
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format on stdout')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format on stdout')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'mcpgate;connect' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'mcpgate;approvals' {
            [CompletionResult]::new('--state', '--state', [CompletionResultType]::ParameterName, 'Only requests in this state')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format on stdout')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format on stdout')
            [CompletionResult]::new('--all', '--all', [CompletionResultType]::ParameterName, 'Requests in every state, not only pending ones (same as --state all)')
            [CompletionResult]::new('-w', '-w', [CompletionResultType]::ParameterName, 'Keep running and print new requests and changes as they happen, until Ctrl-C')
            [CompletionResult]::new('--watch', '--watch', [CompletionResultType]::ParameterName, 'Keep running and print new requests and changes as they happen, until Ctrl-C')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'mcpgate;approve' {
            [CompletionResult]::new('--reason', '--reason', [CompletionResultType]::ParameterName, 'Why; recorded with the decision and shown to the requester')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format on stdout')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format on stdout')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Do not ask for confirmation (it is asked only when stdin is a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Do not ask for confirmation (it is asked only when stdin is a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'mcpgate;deny' {
            [CompletionResult]::new('--reason', '--reason', [CompletionResultType]::ParameterName, 'Why; recorded with the decision and shown to the requester')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format on stdout')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format on stdout')
            [CompletionResult]::new('-y', '-y', [CompletionResultType]::ParameterName, 'Do not ask for confirmation (it is asked only when stdin is a terminal)')
            [CompletionResult]::new('--yes', '--yes', [CompletionResultType]::ParameterName, 'Do not ask for confirmation (it is asked only when stdin is a terminal)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'mcpgate;request-access' {
            [CompletionResult]::new('--duration', '--duration', [CompletionResultType]::ParameterName, 'For how long, e.g. 30m, 1h, 2h 30m (at most what your role allows)')
            [CompletionResult]::new('--reason', '--reason', [CompletionResultType]::ParameterName, 'Why you need it; the approvers see it, and it is recorded')
            [CompletionResult]::new('--wait', '--wait', [CompletionResultType]::ParameterName, 'Wait for the decision (exit 0 granted, 20 denied, 21 expired)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'mcpgate;grants' {
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format on stdout')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format on stdout')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'mcpgate;sessions' {
            [CompletionResult]::new('--user', '--user', [CompletionResultType]::ParameterName, 'Only this user''s sessions (other users'' need a role with audit = true)')
            [CompletionResult]::new('--server', '--server', [CompletionResultType]::ParameterName, 'Only sessions to this server')
            [CompletionResult]::new('--since', '--since', [CompletionResultType]::ParameterName, 'Only sessions active at or after this time: 2026-05-01T18:00:00Z, 2026-05-01, or a span back from now like 2h or 7d')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format on stdout')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format on stdout')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'mcpgate;replay' {
            [CompletionResult]::new('--speed', '--speed', [CompletionResultType]::ParameterName, 'Replay with the recorded timing divided by this: 1 is real time, 10 ten times faster (default: print at once)')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format on stdout')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format on stdout')
            [CompletionResult]::new('-f', '-f', [CompletionResultType]::ParameterName, 'Keep going while the session is recorded, until it ends')
            [CompletionResult]::new('--follow', '--follow', [CompletionResultType]::ParameterName, 'Keep going while the session is recorded, until it ends')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'mcpgate;audit' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('verify', 'verify', [CompletionResultType]::ParameterValue, 'Ask the broker to verify a session''s record')
            [CompletionResult]::new('export', 'export', [CompletionResultType]::ParameterValue, 'Export every recorded event in a period for a SIEM (audit role)')
            [CompletionResult]::new('report', 'report', [CompletionResultType]::ParameterValue, 'Write the SOC 2 evidence report for a period (audit role)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'mcpgate;audit;verify' {
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Output format on stdout')
            [CompletionResult]::new('--output', '--output', [CompletionResultType]::ParameterName, 'Output format on stdout')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'mcpgate;audit;export' {
            [CompletionResult]::new('--since', '--since', [CompletionResultType]::ParameterName, 'Events from this time on: 2026-05-01T18:00:00Z, 2026-05-01, or a span back from now like 7d')
            [CompletionResult]::new('--until', '--until', [CompletionResultType]::ParameterName, 'Events before this time (default: now)')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'jsonl (one JSON object a line) or csv')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Write to FILE instead of stdout (kept as FILE.part until complete)')
            [CompletionResult]::new('--out', '--out', [CompletionResultType]::ParameterName, 'Write to FILE instead of stdout (kept as FILE.part until complete)')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'mcpgate;audit;report' {
            [CompletionResult]::new('--since', '--since', [CompletionResultType]::ParameterName, 'The period''s start: 2026-05-01T18:00:00Z, 2026-05-01, or a span back from now like 90d')
            [CompletionResult]::new('--until', '--until', [CompletionResultType]::ParameterName, 'The period''s end (default: now)')
            [CompletionResult]::new('--format', '--format', [CompletionResultType]::ParameterName, 'md (Markdown) or html')
            [CompletionResult]::new('-o', '-o', [CompletionResultType]::ParameterName, 'Write to FILE instead of stdout')
            [CompletionResult]::new('--out', '--out', [CompletionResultType]::ParameterName, 'Write to FILE instead of stdout')
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'mcpgate;audit;help' {
            [CompletionResult]::new('verify', 'verify', [CompletionResultType]::ParameterValue, 'Ask the broker to verify a session''s record')
            [CompletionResult]::new('export', 'export', [CompletionResultType]::ParameterValue, 'Export every recorded event in a period for a SIEM (audit role)')
            [CompletionResult]::new('report', 'report', [CompletionResultType]::ParameterValue, 'Write the SOC 2 evidence report for a period (audit role)')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'mcpgate;audit;help;verify' {
            break
        }
        'mcpgate;audit;help;export' {
            break
        }
        'mcpgate;audit;help;report' {
            break
        }
        'mcpgate;audit;help;help' {
            break
        }
        'mcpgate;completions' {
            [CompletionResult]::new('-h', '-h', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('--help', '--help', [CompletionResultType]::ParameterName, 'Print help (see more with ''--help'')')
            [CompletionResult]::new('-V', '-V ', [CompletionResultType]::ParameterName, 'Print version')
            [CompletionResult]::new('--version', '--version', [CompletionResultType]::ParameterName, 'Print version')
            break
        }
        'mcpgate;help' {
            [CompletionResult]::new('login', 'login', [CompletionResultType]::ParameterValue, 'Sign in to a broker and keep the token in the OS keyring (or a 0600 file)')
            [CompletionResult]::new('logout', 'logout', [CompletionResultType]::ParameterValue, 'Forget the token and the broker settings on this machine')
            [CompletionResult]::new('status', 'status', [CompletionResultType]::ParameterValue, 'Show who you are logged in as, at which broker, and until when')
            [CompletionResult]::new('servers', 'servers', [CompletionResultType]::ParameterValue, 'List the MCP servers you may connect to')
            [CompletionResult]::new('connect', 'connect', [CompletionResultType]::ParameterValue, 'Relay MCP between stdin/stdout and a server, through the broker')
            [CompletionResult]::new('approvals', 'approvals', [CompletionResultType]::ParameterValue, 'List the approval requests you may decide, and your own')
            [CompletionResult]::new('approve', 'approve', [CompletionResultType]::ParameterValue, 'Approve a held call or an access request')
            [CompletionResult]::new('deny', 'deny', [CompletionResultType]::ParameterValue, 'Deny a held call or an access request')
            [CompletionResult]::new('request-access', 'request-access', [CompletionResultType]::ParameterValue, 'Ask for access to a server for a while; an approver must grant it')
            [CompletionResult]::new('grants', 'grants', [CompletionResultType]::ParameterValue, 'List access grants, live and expired, newest first')
            [CompletionResult]::new('sessions', 'sessions', [CompletionResultType]::ParameterValue, 'List recorded sessions, newest first')
            [CompletionResult]::new('replay', 'replay', [CompletionResultType]::ParameterValue, 'Show a recorded session as a timeline')
            [CompletionResult]::new('audit', 'audit', [CompletionResultType]::ParameterValue, 'Verify, export and report on session records (auditors)')
            [CompletionResult]::new('completions', 'completions', [CompletionResultType]::ParameterValue, 'Print a shell completion script to stdout')
            [CompletionResult]::new('help', 'help', [CompletionResultType]::ParameterValue, 'Print this message or the help of the given subcommand(s)')
            break
        }
        'mcpgate;help;login' {
            break
        }
        'mcpgate;help;logout' {
            break
        }
        'mcpgate;help;status' {
            break
        }
        'mcpgate;help;servers' {
            break
        }
        'mcpgate;help;connect' {
            break
        }
        'mcpgate;help;approvals' {
            break
        }
        'mcpgate;help;approve' {
            break
        }
        'mcpgate;help;deny' {
            break
        }
        'mcpgate;help;request-access' {
            break
        }
        'mcpgate;help;grants' {
            break
        }
        'mcpgate;help;sessions' {
            break
        }
        'mcpgate;help;replay' {
            break
        }
        'mcpgate;help;audit' {
            [CompletionResult]::new('verify', 'verify', [CompletionResultType]::ParameterValue, 'Ask the broker to verify a session''s record')
            [CompletionResult]::new('export', 'export', [CompletionResultType]::ParameterValue, 'Export every recorded event in a period for a SIEM (audit role)')
            [CompletionResult]::new('report', 'report', [CompletionResultType]::ParameterValue, 'Write the SOC 2 evidence report for a period (audit role)')
            break
        }
        'mcpgate;help;audit;verify' {
            break
        }
        'mcpgate;help;audit;export' {
            break
        }
        'mcpgate;help;audit;report' {
            break
        }
        'mcpgate;help;completions' {
            break
        }
        'mcpgate;help;help' {
            break
        }
    })

    $completions.Where{ $_.CompletionText -like "$wordToComplete*" } |
        Sort-Object -Property ListItemText
}
