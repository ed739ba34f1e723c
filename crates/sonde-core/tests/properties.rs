//! Property tests for every parser fed by a file or a peer: whatever the
//! input, they return a value or an error that points inside the input,
//! and never panic. (Coverage-guided fuzzing of the same entry points is
//! issue 7's; these run in every `cargo test`.)

#![allow(clippy::unwrap_used, reason = "tests")]

use std::path::Path;

use proptest::prelude::*;
use sonde_core::{
    Directive, EndpointResponse, MAX_DIRECTIVE_TEXT, MAX_DIRECTIVES, MAX_DISABLE_SECS,
    MAX_RESPONSE_BYTES, MIN_DISABLE_SECS, Manifest, parse_events_jsonl,
};

/// Text that looks like a manifest: known keys and tables, shuffled, with
/// garbage values mixed in.
fn manifest_like() -> impl Strategy<Value = String> {
    let line = prop_oneof![
        Just("[telemetry]".to_string()),
        Just("[[plugin]]".to_string()),
        Just("[plugin.config]".to_string()),
        Just("[plugin.limits]".to_string()),
        "(mode|buffer_capacity|state_dir|endpoint|interval|name|path|sha256|allow|events|memory_mb|x) = (\"[a-z:/.0-9]{0,12}\"|[0-9]{1,12}|true|\\[\\]|\\{)",
        "[ -~]{0,30}",
    ];
    prop::collection::vec(line, 0..24).prop_map(|l| l.join("\n"))
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn the_manifest_parser_never_panics_and_errors_point_inside_the_file(text in manifest_like()) {
        let lines = text.lines().count().max(1);
        if let Err(e) = Manifest::parse(&text, Path::new("m.toml")) {
            prop_assert!(e.at.line <= lines + 1, "line {} of {lines}: {e}", e.at.line);
            prop_assert!(!e.message.is_empty());
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_response_parser(body in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = EndpointResponse::parse(&body);
    }

    #[test]
    fn parsed_directives_are_always_within_their_bounds(
        n in 0usize..100,
        secs in any::<u64>(),
        reason in "[ -~]{0,600}",
    ) {
        let one = serde_json::json!({"action": "disable_plugin", "plugin": "p", "for_secs": secs, "reason": reason});
        let body = serde_json::json!({"directives": vec![one; n]}).to_string();
        if body.len() > MAX_RESPONSE_BYTES {
            prop_assert!(EndpointResponse::parse(body.as_bytes()).is_err(), "over the body cap");
            return Ok(());
        }
        let parsed = EndpointResponse::parse(body.as_bytes()).unwrap();
        prop_assert!(parsed.response.directives.len() <= MAX_DIRECTIVES);
        prop_assert_eq!(parsed.response.directives.len() + parsed.ignored, n);
        for d in parsed.response.directives {
            let Directive::DisablePlugin { for_secs, reason, .. } = d else { unreachable!() };
            prop_assert!((MIN_DISABLE_SECS..=MAX_DISABLE_SECS).contains(&for_secs));
            prop_assert!(reason.len() <= MAX_DIRECTIVE_TEXT);
        }
    }

    #[test]
    fn the_events_parser_never_panics_and_names_the_bad_line(lines in prop::collection::vec("[ -~]{0,80}", 0..20)) {
        let text = lines.join("\n");
        if let Err(e) = parse_events_jsonl(&text, Path::new("e.jsonl")) {
            let msg = e.to_string();
            prop_assert!(msg.starts_with("e.jsonl:"), "{}", msg);
        }
    }
}
