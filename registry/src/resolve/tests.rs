//! Each refusal of section 5 of the registry issue that a host makes on what it fetched, on
//! a registry built in memory with the real signing code.

use ed25519_dalek::SigningKey;

use super::*;
use crate::keylog::KeyAction;
use crate::package::write_package;
use crate::signing::{encode_public_key, encode_signature, generate_signing_key};
use crate::trust::Advisory;
use crate::version::parse_requirement;

const NOW: u64 = 1_800_000_000_000;
const DAY: u64 = 24 * 3600 * 1000;
const SERVED: &[Version] = &[Version::new(0, 1, 0), Version::new(0, 2, 0)];

/// A registry's state for one namespace (`acme`) and one package (`acme/haiku`).
struct World {
    root: SigningKey,
    online: SigningKey,
    certificate: OnlineKeyCertificate,
    publisher: SigningKey,
    log: KeyLog,
    lines: Vec<IndexLine>,
    packages: Vec<Vec<u8>>,
    advisories: Vec<Advisory>,
    seq: u64,
    expires_ms: u64,
}

fn name() -> PluginName {
    "acme/haiku".parse().unwrap()
}

fn skill(version: &str, description: &str) -> Vec<u8> {
    let manifest = format!(
        "name = \"acme/haiku\"\nversion = \"{version}\"\nkind = \"skill\"\ndescription = \"{description}\"\n"
    );
    let skill_md = format!("---\nname: haiku\ndescription: {description}\n---\nCount syllables.\n");
    write_package(&manifest, None, Some(&skill_md), None).unwrap()
}

impl World {
    fn new() -> World {
        let root = generate_signing_key().unwrap();
        let online = generate_signing_key().unwrap();
        let certificate =
            OnlineKeyCertificate::issue(&root, &online.verifying_key(), NOW + 365 * DAY).unwrap();
        let publisher = generate_signing_key().unwrap();
        let log = KeyLog::start("acme", &publisher).unwrap();
        World {
            root,
            online,
            certificate,
            publisher,
            log,
            lines: Vec::new(),
            packages: Vec::new(),
            advisories: Vec::new(),
            seq: 5,
            expires_ms: NOW + 7 * DAY,
        }
    }

    /// Publishes `version`, signed by `key`; `contract` overrides the statement's contract
    /// (a component's, without building one). Returns the package.
    fn publish_with(&mut self, version: &str, contract: Option<&str>, key: &SigningKey) -> Vec<u8> {
        let package = skill(version, "Write haiku");
        let read = read_package(&package, &PackageLimits::default()).unwrap();
        let mut statement = ReleaseStatement::for_package(&read, KeyId::of(&key.verifying_key()));
        statement.contract = contract.map(|c| Version::parse(c).unwrap());
        let signature = encode_signature(&statement.sign(key).unwrap());
        self.lines.push(IndexLine {
            statement,
            signature,
            key_log_position: self.log.len(),
            previous: self.lines.last().map(|l| l.hash().unwrap()),
            yanked: false,
        });
        self.packages.push(package.clone());
        package
    }

    fn publish(&mut self, version: &str) -> Vec<u8> {
        let key = self.publisher.clone();
        self.publish_with(version, None, &key)
    }

    fn fetched(&self) -> Fetched {
        let advisories = AdvisoryList::sign(self.advisories.clone(), &self.online).unwrap();
        let timestamp =
            Timestamp::sign(self.seq, self.expires_ms, &advisories, &self.online).unwrap();
        let lines = |items: Vec<String>| items.join("\n") + "\n";
        Fetched {
            root_key: encode_public_key(&self.root.verifying_key()),
            certificate: self.certificate.clone(),
            timestamp,
            advisories,
            key_log: lines(
                self.log
                    .entries()
                    .iter()
                    .map(|e| serde_json::to_string(e).unwrap())
                    .collect(),
            ),
            index: lines(
                self.lines
                    .iter()
                    .map(|l| serde_json::to_string(l).unwrap())
                    .collect(),
            ),
        }
    }

    fn pinned_root(&self) -> KeyId {
        KeyId::of(&self.root.verifying_key())
    }

    fn resolve(&self, pins: &Pins, wanted: Wanted) -> Result<Resolution, ResolveError> {
        self.resolve_at(pins, wanted, None, false, NOW)
    }

    fn resolve_at(
        &self,
        pins: &Pins,
        wanted: Wanted,
        installed: Option<&Version>,
        allow_downgrade: bool,
        now: u64,
    ) -> Result<Resolution, ResolveError> {
        let name = name();
        let request = Request {
            name: &name,
            wanted,
            served: SERVED,
            installed,
            allow_downgrade,
        };
        resolve(&self.pinned_root(), pins, self.fetched(), &request, now)
    }
}

fn range(requirement: &str) -> Wanted {
    Wanted::Range(parse_requirement(requirement).unwrap())
}

fn version(line: &IndexLine) -> String {
    line.statement.version.to_string()
}

#[test]
fn the_newest_usable_release_is_chosen_and_what_was_passed_over_is_said() {
    let mut world = World::new();
    for v in ["1.0.0", "1.1.0", "1.2.0"] {
        world.publish(v);
    }
    let key = world.publisher.clone();
    world.publish_with("1.3.0", Some("0.3.0"), &key);
    world.publish("1.4.0");
    world.publish("2.0.0");
    world.publish("2.1.0-beta.1");
    world.lines[2].yanked = true;
    world.advisories.push(Advisory {
        name: "acme/haiku".into(),
        versions: "=1.4.0".into(),
        package_sha256: None,
        reason: "prompt injection".into(),
    });
    let pins = Pins::default();

    let chosen = world.resolve(&pins, range("^1")).unwrap();
    assert_eq!(version(&chosen.line), "1.1.0");
    let skipped: Vec<String> = chosen
        .skipped
        .iter()
        .map(|(v, why)| format!("{v} {why}"))
        .collect();
    assert_eq!(
        skipped,
        [
            "1.4.0 recalled by the registry: prompt injection",
            "1.3.0 needs kelp:plugin 0.3.0, which this host does not serve",
            "1.2.0 yanked",
        ]
    );
    assert_eq!(chosen.pins.timestamp_seq, 5);
    assert_eq!(chosen.pins.key_log, Some(world.log.pin()));
    assert_eq!(chosen.pins.index.unwrap().len, 7);

    // Semver: a bare version is exact, `~` stays within the minor, pre-releases only when
    // named.
    for (requirement, expected) in [
        ("1.0.0", "1.0.0"),
        ("~1.1", "1.1.0"),
        ("^2", "2.0.0"),
        ("*", "2.0.0"),
        ("2.1.0-beta.1", "2.1.0-beta.1"),
        (">=2.1.0-beta.0", "2.1.0-beta.1"),
    ] {
        let chosen = world.resolve(&pins, range(requirement)).unwrap();
        assert_eq!(version(&chosen.line), expected, "{requirement}");
    }
    let none = world.resolve(&pins, range("1.2.0")).unwrap_err();
    assert_eq!(
        none.to_string(),
        "no release of `acme/haiku` matches =1.2.0 (passed over: 1.2.0: yanked)"
    );

    // A lock resolves its yanked release, never a recalled one or another digest.
    let locked = |i: usize| Wanted::Locked {
        version: world.lines[i].statement.version.clone(),
        package_sha256: world.lines[i].statement.package_sha256,
    };
    assert_eq!(
        version(&world.resolve(&pins, locked(2)).unwrap().line),
        "1.2.0"
    );
    let recalled = world.resolve(&pins, locked(4)).unwrap_err();
    assert!(
        matches!(
            recalled,
            ResolveError::Refused {
                why: Skip::Advisory(_),
                ..
            }
        ),
        "{recalled}"
    );
    let other = Wanted::Locked {
        version: Version::new(1, 0, 0),
        package_sha256: world.lines[1].statement.package_sha256,
    };
    assert!(matches!(
        world.resolve(&pins, other),
        Err(ResolveError::LockMismatch { .. })
    ));

    // Downgrades only when asked for.
    let installed = Version::new(2, 0, 0);
    let refused = world
        .resolve_at(&pins, range("^1"), Some(&installed), false, NOW)
        .unwrap_err();
    assert!(
        refused.to_string().contains("--allow-downgrade"),
        "{refused}"
    );
    let allowed = world
        .resolve_at(&pins, range("^1"), Some(&installed), true, NOW)
        .unwrap();
    assert_eq!(version(&allowed.line), "1.1.0");
}

#[test]
fn a_tampered_download_is_refused_before_it_is_unpacked() {
    let mut world = World::new();
    let package = world.publish("1.0.0");
    let chosen = world.resolve(&Pins::default(), range("1.0.0")).unwrap();
    verify_download(&chosen.line, &package, &PackageLimits::default()).unwrap();

    let mut tampered = package.clone();
    let last = tampered.len() - 9;
    tampered[last] ^= 1;
    let refused = verify_download(&chosen.line, &tampered, &PackageLimits::default()).unwrap_err();
    assert!(
        matches!(refused, ResolveError::DigestMismatch { .. }),
        "{refused}"
    );
    // Bytes that would not even unpack fail on the digest, not in the reader.
    let refused =
        verify_download(&chosen.line, b"not a package", &PackageLimits::default()).unwrap_err();
    assert!(
        matches!(refused, ResolveError::DigestMismatch { .. }),
        "{refused}"
    );
}

#[test]
fn rollbacks_expiry_forks_forgeries_and_foreign_keys_are_refused() {
    let mut world = World::new();
    world.publish("1.0.0");
    let first = world.resolve(&Pins::default(), range("*")).unwrap();

    // An older timestamp than seen; an expired one.
    let newer_seen = Pins {
        timestamp_seq: world.seq + 1,
        ..first.pins.clone()
    };
    let refused = world.resolve(&newer_seen, range("*")).unwrap_err();
    assert!(
        matches!(refused, ResolveError::Trust(TrustError::Rollback { .. })),
        "{refused}"
    );
    let refused = world
        .resolve_at(&first.pins, range("*"), None, false, world.expires_ms + 1)
        .unwrap_err();
    assert!(
        matches!(refused, ResolveError::Trust(TrustError::Expired)),
        "{refused}"
    );

    // Another registry's root; a forged advisory list.
    let mut other = World::new();
    other.publish("1.0.0");
    let name = name();
    let request = Request {
        name: &name,
        wanted: range("*"),
        served: SERVED,
        installed: None,
        allow_downgrade: false,
    };
    let refused = resolve(
        &world.pinned_root(),
        &Pins::default(),
        other.fetched(),
        &request,
        NOW,
    )
    .unwrap_err();
    assert!(
        matches!(refused, ResolveError::Trust(TrustError::WrongRoot { .. })),
        "{refused}"
    );
    let mut forged = world.fetched();
    forged.advisories.advisories.push(Advisory {
        name: "acme/haiku".into(),
        versions: "*".into(),
        package_sha256: None,
        reason: "forged".into(),
    });
    assert!(resolve(&world.pinned_root(), &first.pins, forged, &request, NOW).is_err());

    // A line whose signature is another line's.
    let mut swapped = world.fetched();
    world.publish("1.1.0");
    let mut lines = world.lines.clone();
    lines[1].signature = lines[0].signature.clone();
    swapped.index = lines
        .iter()
        .map(|l| serde_json::to_string(l).unwrap() + "\n")
        .collect();
    assert!(matches!(
        resolve(&world.pinned_root(), &first.pins, swapped, &request, NOW),
        Err(ResolveError::Index(_))
    ));

    // The index rewritten: its first line replaced by a validly signed other package.
    let pins = world.resolve(&first.pins, range("*")).unwrap().pins;
    let mut rewritten = World {
        lines: Vec::new(),
        packages: Vec::new(),
        ..clone_world(&world)
    };
    let key = rewritten.publisher.clone();
    let package = skill("1.0.0", "Something else entirely");
    let read = read_package(&package, &PackageLimits::default()).unwrap();
    let statement = ReleaseStatement::for_package(&read, KeyId::of(&key.verifying_key()));
    rewritten.lines.push(IndexLine {
        signature: encode_signature(&statement.sign(&key).unwrap()),
        statement,
        key_log_position: 1,
        previous: None,
        yanked: false,
    });
    rewritten.publish("1.1.0");
    let refused = rewritten.resolve(&pins, range("*")).unwrap_err();
    assert!(refused.to_string().contains("rewritten"), "{refused}");

    // The key log shortened below its pin, and an entry signed by a key it never had.
    let second = generate_signing_key().unwrap();
    let mut grown = clone_world(&world);
    let publisher = grown.publisher.clone();
    grown
        .log
        .sign_next(
            KeyAction::Add {
                public_key: encode_public_key(&second.verifying_key()),
            },
            &publisher,
        )
        .unwrap();
    let grown_pins = grown.resolve(&pins, range("*")).unwrap().pins;
    let refused = world.resolve(&grown_pins, range("*")).unwrap_err();
    assert!(refused.to_string().contains("fewer than"), "{refused}");
    let stranger = generate_signing_key().unwrap();
    let mut foreign = world.fetched();
    let mut entry = grown.log.entries()[1].clone();
    entry.signer = KeyId::of(&stranger.verifying_key());
    foreign
        .key_log
        .push_str(&(serde_json::to_string(&entry).unwrap() + "\n"));
    assert!(matches!(
        resolve(&world.pinned_root(), &pins, foreign, &request, NOW),
        Err(ResolveError::KeyLog(_))
    ));
}

#[test]
fn a_revoked_key_fails_new_releases_but_not_older_ones() {
    let mut world = World::new();
    world.publish("1.0.0");
    let first = world.publisher.clone();
    let second = generate_signing_key().unwrap();
    world
        .log
        .sign_next(
            KeyAction::Add {
                public_key: encode_public_key(&second.verifying_key()),
            },
            &first,
        )
        .unwrap();
    world
        .log
        .sign_next(
            KeyAction::Revoke {
                key_id: KeyId::of(&first.verifying_key()),
            },
            &second,
        )
        .unwrap();
    world.publish_with("1.1.0", None, &second);
    let chosen = world.resolve(&Pins::default(), range("1.0.0")).unwrap();
    assert_eq!(chosen.key, first.verifying_key());
    assert_eq!(
        version(&world.resolve(&Pins::default(), range("*")).unwrap().line),
        "1.1.0"
    );
    world.publish_with("1.2.0", None, &first);
    let refused = world.resolve(&Pins::default(), range("*")).unwrap_err();
    assert!(refused.to_string().contains("revoked"), "{refused}");
}

fn clone_world(world: &World) -> World {
    World {
        root: world.root.clone(),
        online: world.online.clone(),
        certificate: world.certificate.clone(),
        publisher: world.publisher.clone(),
        log: world.log.clone(),
        lines: world.lines.clone(),
        packages: world.packages.clone(),
        advisories: world.advisories.clone(),
        seq: world.seq,
        expires_ms: world.expires_ms,
    }
}
