//! `parse_skill` (SKILL.md front matter): what it accepts has a non-empty name and
//! description and a body that is the end of the file, and written back parses to the same.

#![no_main]

use kelp_registry::package::parse_skill;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(skill) = parse_skill(text) else {
        return;
    };
    assert!(!skill.name.trim().is_empty());
    assert!(!skill.description.trim().is_empty());
    assert!(
        text.ends_with(&skill.body),
        "body is not the end of the file"
    );

    let written = kelp_fuzz::render::skill_md(&skill);
    match parse_skill(&written) {
        Ok(again) => assert_eq!(again, skill, "written back as\n{written}"),
        Err(e) => panic!("accepted SKILL.md written back is refused: {e}\n{written}"),
    }
});
