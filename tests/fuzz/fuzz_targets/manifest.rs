//! `Manifest::parse` (`kelp.toml`): what it accepts keeps the documented rules, and written
//! back as TOML parses again to the same manifest.

#![no_main]

use kelp_registry::manifest::{MAX_DESCRIPTION_CHARS, Manifest, PluginKind, SecretPosition};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(manifest) = Manifest::parse(text) else {
        return;
    };

    assert!(!manifest.description.trim().is_empty());
    assert!(manifest.description.chars().count() <= MAX_DESCRIPTION_CHARS);
    assert!(manifest.wit.is_some() || manifest.kind == PluginKind::Skill);
    assert!(
        manifest
            .config_schema
            .as_ref()
            .is_none_or(|s| s.is_object())
    );
    let mut names = std::collections::BTreeSet::new();
    for secret in &manifest.capabilities.secrets {
        assert!(names.insert(&secret.name), "secret `{}` twice", secret.name);
        assert!(
            secret.host.is_some(),
            "secret `{}` has no host",
            secret.name
        );
        if let SecretPosition::Header { format, .. } = &secret.position {
            assert_eq!(format.matches("{}").count(), 1, "{format}");
        }
    }
    assert!(serde_json::to_value(&manifest).is_ok());

    let written = kelp_fuzz::render::manifest_toml(&manifest);
    match Manifest::parse(&written) {
        Ok(again) => assert_eq!(again, manifest, "written back as\n{written}"),
        Err(e) => panic!("accepted manifest written back is refused: {e}\n{written}"),
    }
});
