//! SKILL.md front matter: each rule of the Agent Skills format, and YAML as authors write it.

use super::*;

fn skill(front: &str) -> Result<Skill, PackageError> {
    parse_skill(&format!("---\n{front}---\n# Body\n"))
}

/// The field a refusal names, or a panic naming what came instead.
fn refused_field(front: &str) -> (String, String) {
    match skill(front) {
        Err(PackageError::SkillField { field, message }) => (field, message),
        other => panic!("expected a refused field for {front:?}, got {other:?}"),
    }
}

#[test]
fn every_field_of_the_format_is_read() {
    let s = skill(
        "name: pdf-processing\n\
         description: Extract PDF text. Use when handling PDFs.\n\
         license: Apache-2.0\n\
         compatibility: Requires poppler-utils\n\
         metadata:\n  author: example-org\n  version: \"1.0\"\n\
         allowed-tools: Bash(git:*) Read\n",
    )
    .unwrap();
    assert_eq!(s.name, "pdf-processing");
    assert_eq!(s.description, "Extract PDF text. Use when handling PDFs.");
    assert_eq!(s.license.as_deref(), Some("Apache-2.0"));
    assert_eq!(s.compatibility.as_deref(), Some("Requires poppler-utils"));
    assert_eq!(
        s.metadata,
        BTreeMap::from([
            ("author".to_owned(), "example-org".to_owned()),
            ("version".to_owned(), "1.0".to_owned()),
        ])
    );
    assert_eq!(s.allowed_tools, ["Bash(git:*)", "Read"]);
    assert_eq!(s.body, "# Body\n");

    let minimal = skill("name: a\ndescription: d\n").unwrap();
    assert_eq!(minimal.license, None);
    assert_eq!(minimal.compatibility, None);
    assert!(minimal.metadata.is_empty() && minimal.allowed_tools.is_empty());
}

#[test]
fn name_is_1_to_64_of_lowercase_kebab_case() {
    for good in ["a", "pdf-processing", "v2", "a-b-c", &"x".repeat(64)] {
        assert_eq!(
            skill(&format!("name: {good}\ndescription: d\n"))
                .unwrap()
                .name,
            good
        );
    }
    for bad in [
        "PDF-Processing",
        "-pdf",
        "pdf-",
        "pdf--processing",
        "pdf_processing",
        "pdf processing",
        "café",
        "\"\"",
        &"x".repeat(65),
    ] {
        let (field, message) = refused_field(&format!("name: {bad}\ndescription: d\n"));
        assert_eq!(field, "name", "{bad}");
        assert!(
            message.contains("a-z") || message.contains("empty"),
            "{bad}: {message}"
        );
    }
    let err = skill("name: Bad\ndescription: d\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with("SKILL.md front matter field `name`: `Bad` must be 1 to 64"),
        "{err}"
    );
}

#[test]
fn description_is_required_non_empty_and_at_most_1024_characters() {
    assert_eq!(refused_field("name: a\n").0, "description");
    assert_eq!(refused_field("name: a\ndescription:\n").0, "description");
    assert_eq!(
        refused_field("name: a\ndescription: '  '\n").0,
        "description"
    );
    assert_eq!(refused_field("description: d\n").0, "name");

    // Characters, not bytes: 1024 two-byte characters fit.
    let at_cap = "é".repeat(1024);
    assert_eq!(
        skill(&format!("name: a\ndescription: {at_cap}\n"))
            .unwrap()
            .description,
        at_cap
    );
    let (field, message) = refused_field(&format!("name: a\ndescription: {}\n", "é".repeat(1025)));
    assert_eq!(field, "description");
    assert!(
        message.contains("1025") && message.contains("1024"),
        "{message}"
    );
}

#[test]
fn optional_fields_are_checked_when_present() {
    let (field, message) = refused_field(&format!(
        "name: a\ndescription: d\ncompatibility: {}\n",
        "c".repeat(501)
    ));
    assert_eq!(field, "compatibility");
    assert!(message.contains("at most 500"), "{message}");
    assert!(
        skill(&format!(
            "name: a\ndescription: d\ncompatibility: {}\n",
            "c".repeat(500)
        ))
        .is_ok()
    );

    assert_eq!(
        refused_field("name: a\ndescription: d\nlicense:\n").0,
        "license"
    );
    assert_eq!(
        refused_field("name: a\ndescription: d\nlicense: [MIT]\n").0,
        "license"
    );
}

#[test]
fn metadata_maps_strings_to_strings() {
    let (field, message) = refused_field("name: a\ndescription: d\nmetadata:\n  version: 1.10\n");
    assert_eq!(field, "metadata.version");
    assert!(
        message.contains("not the number `1.1`") && message.contains("in quotes"),
        "{message}"
    );
    assert_eq!(
        refused_field("name: a\ndescription: true\n"),
        (
            "description".to_owned(),
            "must be a string, not the boolean `true`; put the value in quotes as you mean it"
                .to_owned()
        )
    );
    assert_eq!(
        refused_field("name: a\ndescription: d\nmetadata:\n  tags: [a, b]\n"),
        (
            "metadata.tags".to_owned(),
            "must be a string, not `[\"a\",\"b\"]`".to_owned()
        )
    );
    assert_eq!(
        refused_field("name: a\ndescription: d\nmetadata: author\n").0,
        "metadata"
    );
    assert_eq!(
        refused_field("name: a\ndescription: d\nmetadata:\n  1: one\n").0,
        "metadata"
    );
    // Flow style is YAML too.
    let s = skill("name: a\ndescription: d\nmetadata: {author: me, team: \"x\"}\n").unwrap();
    assert_eq!(s.metadata["author"], "me");
    assert_eq!(s.metadata["team"], "x");
}

#[test]
fn allowed_tools_is_a_string_or_a_list() {
    let listed =
        skill("name: a\ndescription: d\nallowed-tools:\n  - Read\n  - Bash(jq:*)\n").unwrap();
    assert_eq!(listed.allowed_tools, ["Read", "Bash(jq:*)"]);
    assert_eq!(
        refused_field("name: a\ndescription: d\nallowed-tools:\n  - Read\n  - 3\n").0,
        "allowed-tools[1]"
    );
    assert_eq!(
        refused_field("name: a\ndescription: d\nallowed-tools: {a: b}\n").0,
        "allowed-tools"
    );
}

#[test]
fn unknown_keys_are_refused_and_pointed_to_metadata() {
    for (front, key) in [
        ("name: a\ndescription: d\nversion: \"1.0\"\n", "version"),
        ("name: a\ndescripton: d\n", "descripton"),
        ("name: a\ndescription: d\nhooks:\n  pre: x\n", "hooks"),
    ] {
        let (field, message) = refused_field(front);
        assert_eq!(field, key);
        assert!(
            message.contains("`metadata`") && message.contains("`allowed-tools`"),
            "{message}"
        );
    }
}

#[test]
fn block_scalars_are_read_as_yaml_reads_them() {
    let text = |front: &str| skill(&format!("name: a\n{front}")).unwrap().description;
    // Folded: line breaks become spaces; clip keeps one final newline.
    assert_eq!(
        text("description: >\n  Use when writing\n  prose.\n"),
        "Use when writing prose.\n"
    );
    // Literal: line breaks kept.
    assert_eq!(
        text("description: |\n  Line one.\n  Line two.\n"),
        "Line one.\nLine two.\n"
    );
    // Strip chomping (`-`) drops the final newline; keep (`+`) keeps trailing blank lines.
    assert_eq!(text("description: >-\n  Folded\n  text.\n"), "Folded text.");
    assert_eq!(
        text("description: |-\n  Literal\n  text.\n"),
        "Literal\ntext."
    );
    assert_eq!(text("description: |+\n  Kept.\n\n"), "Kept.\n\n");
    assert_eq!(text("description: >+\n  Kept\n  too.\n\n"), "Kept too.\n\n");
    // A more-indented line inside a folded scalar keeps its break, as YAML says.
    assert_eq!(
        text("description: >\n  Steps:\n    1. read\n  done\n"),
        "Steps:\n  1. read\ndone\n"
    );
    // Other fields take block scalars too, and a `---` inside one does not end the front
    // matter (it is indented).
    let s = skill("name: a\ndescription: d\ncompatibility: |\n  Needs git.\n  ---\n  and jq.\n")
        .unwrap();
    assert_eq!(
        s.compatibility.as_deref(),
        Some("Needs git.\n---\nand jq.\n")
    );
    assert_eq!(s.body, "# Body\n");
    // The length cap counts what the block scalar yields.
    let long = format!(
        "description: >-\n  {}\n  {}\n",
        "a".repeat(600),
        "b".repeat(423)
    );
    assert_eq!(text(&long).chars().count(), 1024);
    let longer = format!(
        "description: >-\n  {}\n  {}\n",
        "a".repeat(600),
        "b".repeat(424)
    );
    assert_eq!(
        refused_field(&format!("name: a\n{longer}")).0,
        "description"
    );
}

#[test]
fn quoting_and_comments_are_yaml() {
    let s = skill(
        "# a comment\nname: \"writing\"\ndescription: 'It''s for: prose' # trailing comment\n",
    )
    .unwrap();
    assert_eq!(s.name, "writing");
    assert_eq!(s.description, "It's for: prose");
    // A plain scalar may not hold `: ` — YAML refuses it, and so does every other reader of
    // the format; the message says it is a YAML error.
    // The line is the file's (line 3: after `---` and `name`).
    let err = skill("name: a\ndescription: Use when: writing\n").unwrap_err();
    assert!(
        matches!(&err, PackageError::SkillFrontMatter(m)
            if m.starts_with("not valid YAML") && m.contains("at line 3 ")),
        "{err}"
    );
}

#[test]
fn malformed_front_matter_is_refused() {
    for (text, expected) in [
        ("# no front matter\n", "must start with a `---` line"),
        ("---\nname: a\ndescription: d\n", "no closing `---` line"),
        ("---\n---\nbody\n", "is empty"),
        ("---\n- name\n- description\n---\n", "must be a mapping"),
        (
            "---\nname: a\nname: b\ndescription: d\n---\n",
            "duplicate entry with key \"name\"",
        ),
        ("---\n[1, 2]: x\n---\n", "key `[1,2]` is not a string"),
        ("---\nname: a\ndescription: d\n--- \nbody", ""),
    ] {
        match parse_skill(text) {
            Err(PackageError::SkillFrontMatter(message)) => {
                assert!(message.contains(expected), "{text:?}: {message}");
            }
            Ok(skill) if expected.is_empty() => assert_eq!(skill.body, "body"),
            other => panic!("{text:?}: {other:?}"),
        }
    }
}

#[test]
fn alias_bombs_are_refused() {
    // Each level refers to the one before nine times: expanded, 9^8 strings.
    let mut front = String::from("name: a\ndescription: d\nmetadata:\n  a0: &a0 \"lol\"\n");
    let mut bomb = String::from("x: &a1 [*a0, *a0, *a0, *a0, *a0, *a0, *a0, *a0, *a0]\n");
    for level in 2..=8 {
        let prev = level - 1;
        bomb.push_str(&format!(
            "x{level}: &a{level} [*a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}, *a{prev}]\n"
        ));
    }
    front.push_str(&bomb);
    let err = skill(&front).unwrap_err();
    assert!(
        matches!(&err, PackageError::SkillFrontMatter(m) if m.contains("repetition limit")),
        "{err}"
    );
}
