//! Masking as a whole: profiles, JSON walking, rules, fields, limits.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use super::*;

const CARD: &str = "4111 1111 1111 1111";
const EMAIL: &str = "jane.doe@example.com";

fn masking(toml_text: &str) -> Masking {
    let section: MaskingSection = toml::from_str(toml_text).expect("masking section parses");
    let servers: BTreeSet<String> = ["crm", "files"].map(String::from).into();
    let roles: BTreeSet<String> = ["support", "admin"].map(String::from).into();
    Masking::compile(&section, &servers, &roles, MaskKey::new([1; 32])).expect("compiles")
}

fn compile_error(toml_text: &str) -> String {
    let section: MaskingSection = toml::from_str(toml_text).expect("masking section parses");
    Masking::compile(
        &section,
        &["crm".to_owned()].into(),
        &["support".to_owned()].into(),
        MaskKey::new([1; 32]),
    )
    .expect_err("must be refused")
}

fn mask(m: &Masking, mut value: Value) -> (Value, Report) {
    let masker = m.profile(DEFAULT_PROFILE).unwrap();
    let mut report = Report::default();
    masker.mask_value(&mut value, &mut report, true).unwrap();
    (value, report)
}

fn text(value: &Value) -> String {
    serde_json::to_string(value).unwrap()
}

#[test]
fn every_string_in_a_tool_result_is_masked() {
    let m = masking("");
    let (out, report) = mask(
        &m,
        json!({
            "content": [
                {"type": "text", "text": format!("card {CARD}, mail {EMAIL}")},
                {"type": "resource", "resource": {"uri": "mem://1", "text": format!("owner {EMAIL}")}}
            ],
            "isError": false
        }),
    );
    let s = text(&out);
    assert!(!s.contains("4111") && !s.contains(EMAIL), "{s}");
    assert!(
        s.contains("[MASKED:card]") && s.contains("[MASKED:email]"),
        "{s}"
    );
    assert_eq!(report.counts.get("card"), Some(&1));
    assert_eq!(report.counts.get("email"), Some(&2));
}

#[test]
fn structured_content_and_its_text_copy_stay_equal() {
    let m = masking(
        r#"
        [[fields]]
        name = "row_email"
        path = "$.structuredContent.rows[*].contact"
        "#,
    );
    let structured = json!({"rows": [{"id": 1, "contact": "call me", "card": CARD}]});
    let (out, report) = mask(
        &m,
        json!({
            "content": [{"type": "text", "text": serde_json::to_string_pretty(&structured).unwrap()}],
            "structuredContent": structured,
        }),
    );
    let masked_text: Value =
        serde_json::from_str(out["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(masked_text, out["structuredContent"]);
    assert_eq!(
        out["structuredContent"]["rows"][0]["contact"],
        "[MASKED:row_email]"
    );
    assert_eq!(out["structuredContent"]["rows"][0]["card"], "[MASKED:card]");
    // Pretty text stays pretty.
    assert!(out["content"][0]["text"].as_str().unwrap().contains('\n'));
    // Counted once, not once per copy.
    assert_eq!(report.counts.get("card"), Some(&1));
    assert_eq!(report.counts.get("row_email"), Some(&1));
}

#[test]
fn json_inside_text_is_masked_as_json_escapes_and_all() {
    let m = masking("");
    // `\u0034` is "4": a text scan of the raw JSON would miss the card.
    let inner = r#"{"note": "\u0034111 1111 1111 1111", "password": "hunter2"}"#;
    let (out, report) = mask(&m, json!({"content": [{"type": "text", "text": inner}]}));
    let masked: Value = serde_json::from_str(out["content"][0]["text"].as_str().unwrap()).unwrap();
    assert_eq!(masked["note"], "[MASKED:card]");
    assert_eq!(masked["password"], "[MASKED:secret]");
    assert_eq!(report.total(), 2);
}

#[test]
fn protocol_fields_and_base64_payloads_pass_untouched() {
    let m = masking("");
    // A cursor or a blob may look like anything; masking them would
    // break the conversation or the image.
    let tricky = "4111111111111111";
    let input = json!({
        "resources": [],
        "nextCursor": tricky,
        "contents": [{"uri": "mem://a", "blob": tricky, "mimeType": "application/octet-stream"}],
        "content": [{"type": "image", "data": tricky, "mimeType": "image/png"}],
    });
    let (out, report) = mask(&m, input.clone());
    assert_eq!(out, input);
    assert_eq!(report.total(), 0);
}

#[test]
fn a_field_rule_can_mask_a_blob() {
    let m = masking(
        r#"
        [[fields]]
        name = "attachment"
        path = "$.contents[*].blob"
        "#,
    );
    let (out, _) = mask(
        &m,
        json!({"contents": [{"uri": "mem://a", "blob": "aGVsbG8="}]}),
    );
    assert_eq!(out["contents"][0]["blob"], "[MASKED:attachment]");
}

#[test]
fn secret_named_keys_mask_their_values_whatever_they_look_like() {
    let m = masking("");
    let (out, report) = mask(
        &m,
        json!({"db": {"Password": "hunter2", "API-KEY": "x1", "user": "app", "token": "${TOKEN}"}}),
    );
    assert_eq!(out["db"]["Password"], "[MASKED:secret]");
    assert_eq!(out["db"]["API-KEY"], "[MASKED:secret]");
    assert_eq!(out["db"]["user"], "app");
    // Placeholders are not secrets.
    assert_eq!(out["db"]["token"], "${TOKEN}");
    assert_eq!(report.explained[0].rule, "key:Password");
}

#[test]
fn long_numbers_are_scanned_and_keys_are_masked_too() {
    let m = masking("");
    let (out, report) = mask(
        &m,
        json!({"card": 4111111111111111_u64, "small": 42, "by_mail": {EMAIL: 1, "other": 2}}),
    );
    assert_eq!(out["card"], "[MASKED:card]");
    assert_eq!(out["small"], 42);
    let keys: Vec<&String> = out["by_mail"].as_object().unwrap().keys().collect();
    assert_eq!(keys, ["[MASKED:email]", "other"]);
    assert_eq!(report.total(), 2);
}

#[test]
fn masked_keys_that_collide_keep_both_values() {
    let m = masking("");
    let (out, _) = mask(&m, json!({"a@example.com": 1, "b@example.com": 2}));
    let obj = out.as_object().unwrap();
    assert_eq!(obj.len(), 2);
    assert_eq!(obj["[MASKED:email]"], 1);
    assert_eq!(obj["[MASKED:email]~2"], 2);
}

#[test]
fn values_deep_in_arrays_are_found() {
    let m = masking("");
    let (out, _) = mask(
        &m,
        json!([[[[{"x": [[format!("ssn 536-22-8714 {CARD}")]]}]]]]),
    );
    let s = text(&out);
    assert!(!s.contains("8714") && !s.contains("4111"), "{s}");
}

#[test]
fn custom_rules_with_validation_and_styles() {
    let m = masking(
        r#"
        styles = { email = "hash" }
        [[rules]]
        name = "badge"
        pattern = '\bB-\d{4}\b'
        style = "partial"
        [[rules]]
        name = "account"
        pattern = '\bACC\d{8}\b'
        validate = "luhn"
        "#,
    );
    let masker = m.profile(DEFAULT_PROFILE).unwrap();
    let mut report = Report::default();
    // ACC00000018: digits 00000018 pass Luhn; ACC00000019 does not.
    let out = masker
        .mask_text(
            &format!("badge B-1234, accounts ACC00000018 ACC00000019, {EMAIL}"),
            &mut report,
            false,
        )
        .unwrap()
        .unwrap();
    // Partial of a short value is a full redaction.
    assert!(out.contains("badge [MASKED:badge]"), "{out}");
    assert!(out.contains("[MASKED:account] ACC00000019"), "{out}");
    assert!(out.contains("[MASKED:email:"), "{out}");
    assert!(!out.contains(EMAIL));
}

#[test]
fn profiles_are_chosen_per_server_and_role_first_match() {
    let m = masking(
        r#"
        [profiles.open]
        detectors = []
        [profiles.strict]
        detectors = ["all"]
        [[apply]]
        profile = "open"
        servers = ["files"]
        [[apply]]
        profile = "strict"
        roles = ["support"]
        "#,
    );
    let server = |s: &str| s.parse().unwrap();
    let role = |r: &str| r.parse().unwrap();
    assert_eq!(
        m.for_session(&server("files"), &[role("support")])
            .profile(),
        "open"
    );
    assert_eq!(
        m.for_session(&server("crm"), &[role("support")]).profile(),
        "strict"
    );
    assert_eq!(
        m.for_session(&server("crm"), &[role("admin")]).profile(),
        "default"
    );
    let open = m.profile("open").unwrap();
    let mut report = Report::default();
    assert_eq!(open.mask_text(CARD, &mut report, false).unwrap(), None);
}

#[test]
fn too_deep_or_too_large_is_an_error_not_a_pass() {
    let m = masking("max_depth = 4\nmax_bytes = 64");
    let masker = m.profile(DEFAULT_PROFILE).unwrap();
    let mut deep = json!("x");
    for _ in 0..5 {
        deep = json!([deep]);
    }
    let mut report = Report::default();
    assert_eq!(
        masker.mask_value(&mut deep, &mut report, false),
        Err(MaskError::TooDeep(4))
    );
    let mut big = json!({"text": "a".repeat(65)});
    assert_eq!(
        masker.mask_value(&mut big, &mut report, false),
        Err(MaskError::TooLarge(64))
    );
}

#[test]
fn bad_rules_are_refused_with_the_rule_named() {
    assert!(
        compile_error("[[rules]]\nname = \"x\"\npattern = '('")
            .contains("masking rule \"x\": invalid pattern"),
    );
    assert!(
        compile_error("[[fields]]\nname = \"f\"\npath = '$.['")
            .contains("masking field \"f\": invalid path")
    );
    assert!(
        compile_error("[[rules]]\nname = \"card\"\npattern = 'x'").contains("built-in detector")
    );
    assert!(
        compile_error("[profiles.p]\ndetectors = [\"cards\"]")
            .contains("no built-in detector named \"cards\"")
    );
    assert!(compile_error("[[apply]]\nprofile = \"nope\"").contains("no profile named \"nope\""));
    assert!(
        compile_error("[[apply]]\nprofile = \"default\"\nroles = [\"ghost\"]")
            .contains("no role named \"ghost\"")
    );
    assert!(compile_error("styles = { cardz = \"hash\" }").contains("\"cardz\" is neither"));
    assert!(
        compile_error("[[rules]]\nname = \"Bad Name\"\npattern = 'x'").contains("not a valid name")
    );
}

#[test]
fn explain_names_rule_and_place() {
    let m = masking("");
    let (_, report) = mask(&m, json!({"rows": [{"note": format!("x {EMAIL}")}]}));
    assert_eq!(
        report.explained,
        vec![Explained {
            kind: "email".into(),
            rule: "builtin:email".into(),
            at: "/rows/0/note".into(),
            start: 2,
            end: 2 + EMAIL.len(),
        }]
    );
}

#[test]
fn escapes_in_text_that_embeds_json_do_not_hide_values() {
    let m = masking("");
    let masker = m.profile(DEFAULT_PROFILE).unwrap();
    let mut report = Report::default();
    let out = masker
        .mask_text(
            r#"Echo: {"rows": ["\u0034111111111111111", "\\u0034 stays", "\u0022q\u0022"]}"#,
            &mut report,
            false,
        )
        .unwrap()
        .unwrap();
    assert_eq!(
        out,
        r#"Echo: {"rows": ["[MASKED:card]", "\\u0034 stays", "\u0022q\u0022"]}"#
    );
    // Nothing to decode and nothing found: left alone.
    assert_eq!(
        masker.mask_text(r"a \u0022 b", &mut report, false).unwrap(),
        None
    );
}

#[test]
fn errors_and_server_requests_are_masked_in_their_body() {
    use mcpgate_shared::jsonrpc::Message;
    let m = masking("");
    let masker = m.profile(DEFAULT_PROFILE).unwrap();
    for line in [
        format!(
            r#"{{"jsonrpc":"2.0","id":3,"error":{{"code":-1,"message":"no row for {EMAIL}","data":{{"card":"{CARD}"}}}}}}"#
        ),
        format!(
            r#"{{"jsonrpc":"2.0","id":"s1","method":"sampling/createMessage","params":{{"messages":[{{"role":"user","content":{{"type":"text","text":"about {CARD}"}}}}]}}}}"#
        ),
        format!(
            r#"{{"jsonrpc":"2.0","method":"notifications/message","params":{{"level":"info","data":"mailing {EMAIL}"}}}}"#
        ),
    ] {
        let mut msg = Message::parse(line.as_bytes()).unwrap();
        let mut report = Report::default();
        masker
            .mask_value(msg.body_mut().unwrap(), &mut report, false)
            .unwrap();
        let out = String::from_utf8(msg.to_line()).unwrap();
        assert!(!out.contains("4111") && !out.contains(EMAIL), "{out}");
        assert!(report.total() >= 1, "{out}");
        // The envelope is untouched.
        assert_eq!(msg.id(), Message::parse(line.as_bytes()).unwrap().id());
    }
}
