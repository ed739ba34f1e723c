//! Every input under `fuzz/regressions/<target>/` and `fuzz/seeds/<target>/`
//! replayed through the checks its fuzz target runs (`fuzz/checks.rs`,
//! included as it is): a crash found by `cargo xtask fuzz` stays fixed.

#[path = "../../fuzz/checks.rs"]
mod checks;

use std::path::Path;

fn replay(target: &str, check: fn(&[u8])) -> usize {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
    let mut replayed = 0;
    for folder in ["regressions", "seeds"] {
        let Ok(dir) = std::fs::read_dir(fuzz.join(folder).join(target)) else { continue };
        for entry in dir {
            let path = entry.unwrap().path();
            let input = std::fs::read(&path).unwrap();
            let outcome = std::panic::catch_unwind(|| check(&input));
            assert!(outcome.is_ok(), "{} fails its fuzz check", path.display());
            replayed += 1;
        }
    }
    replayed
}

#[test]
fn saved_fuzz_inputs_pass_their_checks() {
    assert!(replay("manifest", checks::manifest) >= 1);
    assert!(replay("response", checks::response) >= 1);
    assert!(replay("events", checks::events) >= 1);
    assert!(replay("collector_decode", checks::collector_decode) >= 1);
}

#[test]
fn the_seeds_are_valid_inputs_so_the_checks_see_the_success_paths() {
    let fuzz = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/seeds");
    let manifest = std::fs::read_to_string(fuzz.join("manifest/example.toml")).unwrap();
    assert!(sonde_core::Manifest::parse(&manifest, Path::new("m.toml")).is_ok());
    let batch = std::fs::read(fuzz.join("collector_decode/batch.json")).unwrap();
    let plain = sonde_collector::upload::Encoding::Plain;
    assert_eq!(sonde_collector::upload::decode(&batch, plain).unwrap().len(), 1);
    let directives = std::fs::read(fuzz.join("response/directives.json")).unwrap();
    assert_eq!(
        sonde_core::EndpointResponse::parse(&directives).unwrap().response.directives.len(),
        5
    );
}
