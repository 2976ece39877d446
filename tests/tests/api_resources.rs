//! Agents, chat sessions with their messages, and per-user settings, through real HTTP on
//! both databases: each user sees only their own, and bad input is a 4xx with the envelope.

use kelp::plugins::InstallOptions;
use kelp::plugins::grants::Approval;
use kelp_tests::server::TestServer;
use kelp_tests::{both_backends, components as c, manifest, pack};
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Installs the hostile test component so agents have a real tool to name; returns
/// `instance/tool` of one of its tools.
async fn install_tool(s: &TestServer) -> String {
    let package = pack(
        &manifest(c::COMPONENT_HOSTILE_MANIFEST),
        c::COMPONENT_HOSTILE_WASM,
    );
    s.state
        .runtime
        .install(
            &package,
            InstallOptions {
                instance_id: None,
                config: json!({}),
                approval: Approval::default(),
                approve_changes: false,
            },
        )
        .await
        .unwrap();
    let (instance, spec) = s.state.runtime.tools().into_iter().next().unwrap();
    format!("{instance}/{}", spec.name)
}

/// Installs a skill (`SKILL.md`, no tools) named `test/<name>`; returns the plugin name
/// agents list it by.
async fn install_skill(s: &TestServer, name: &str, description: &str) -> String {
    install_skill_as(s, name, name, description).await
}

/// Installs plugin `test/<plugin>` carrying a skill named `skill`; returns the plugin name.
async fn install_skill_as(s: &TestServer, plugin: &str, skill: &str, description: &str) -> String {
    let manifest = format!(
        "name = \"test/{plugin}\"\nversion = \"0.1.0\"\nkind = \"skill\"\ndescription = \"{description}\"\n"
    );
    let skill_md = format!("---\nname: {skill}\ndescription: {description}\n---\nThe body.\n");
    let package =
        kelp_registry::package::write_package(&manifest, None, Some(&skill_md), None).unwrap();
    s.state
        .runtime
        .install(
            &package,
            InstallOptions {
                config: json!({}),
                ..InstallOptions::default()
            },
        )
        .await
        .unwrap();
    format!("test/{plugin}")
}

fn agent_body(name: &str) -> Value {
    json!({"name": name, "provider": {"plugin": "openai", "model": "gpt-test"}})
}

async fn create_agent(s: &TestServer, token: &str, name: &str) -> String {
    let (status, body) = s
        .send("POST", "/api/agents", Some(token), Some(agent_body(name)))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body["id"].as_str().unwrap().to_owned()
}

async fn create_session(s: &TestServer, token: &str, body: Value) -> Value {
    let (status, body) = s
        .send("POST", "/api/sessions", Some(token), Some(body))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

fn ids(page: &Value) -> Vec<&str> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect()
}

async fn count(s: &TestServer, sql: &str, bind: &str) -> i64 {
    use sqlx::Row;
    sqlx::query(sql)
        .bind(bind)
        .fetch_one(&s.state.db().pool)
        .await
        .unwrap()
        .try_get("n")
        .unwrap()
}

both_backends!(
    agent_skills_must_be_installed_skills_named_once,
    |s: TestServer| async move {
        let alice = s.user("alice").await;
        let tool = install_tool(&s).await;
        let haiku = install_skill(&s, "haiku", "Write haiku").await;
        let limerick = install_skill(&s, "limerick", "Write limericks").await;
        let other_haiku = install_skill_as(&s, "haiku-too", "haiku", "Also haiku").await;
        let id = create_agent(&s, &alice, "poet").await;
        let path = format!("/api/agents/{id}");
        let tool_plugin = "test/hostile";
        assert!(tool.starts_with("hostile/"));
        for (skills, why) in [
            (json!(["acme/nope"]), "unknown skill `acme/nope`"),
            (json!([tool_plugin]), "unknown skill `test/hostile`"),
            (
                json!([haiku, limerick, haiku]),
                "`test/haiku` is listed twice",
            ),
            (
                json!([haiku, limerick, other_haiku]),
                "`test/haiku` and `test/haiku-too` both carry a skill named `haiku`",
            ),
        ] {
            let mut body = agent_body("other");
            body["skills"] = skills.clone();
            let (status, created) = s
                .send("POST", "/api/agents", Some(&alice), Some(body))
                .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{skills}: {created}");
            assert_eq!(created["error"]["code"], "invalid_request", "{created}");
            assert!(
                created["error"]["message"].as_str().unwrap().contains(why),
                "{skills}: {created}"
            );
            let (status, updated) = s
                .send(
                    "PATCH",
                    &path,
                    Some(&alice),
                    Some(json!({"skills": skills})),
                )
                .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{updated}");
            assert!(updated["error"]["message"].as_str().unwrap().contains(why));
        }
        let (status, body) = s
            .send(
                "PATCH",
                &path,
                Some(&alice),
                Some(json!({"skills": [haiku, limerick]})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        assert_eq!(body["skills"], json!([haiku, limerick]));
    }
);

both_backends!(
    a_skill_is_parsed_once_per_package_digest,
    |s: TestServer| async move {
        let haiku = install_skill(&s, "haiku", "Write haiku").await;
        let runtime = &s.state.runtime;
        let db = &s.state.db().pool;
        let first = runtime.skill(&haiku).await.unwrap().unwrap();
        assert_eq!(first.description, "Write haiku");
        // The stored bytes are no longer a package, under the same digest: a lookup that read
        // and parsed the package again would fail; one served from memory does not.
        sqlx::query("UPDATE plugins SET package = $1 WHERE name = $2")
            .bind(b"not a package".to_vec())
            .bind(&haiku)
            .execute(db)
            .await
            .unwrap();
        for _ in 0..3 {
            let again = runtime.skill(&haiku).await.unwrap().unwrap();
            assert_eq!(again.description, "Write haiku");
        }
        // Another digest is another package: read again (and here refused as broken).
        sqlx::query("UPDATE plugins SET digest = 'other' WHERE name = $1")
            .bind(&haiku)
            .execute(db)
            .await
            .unwrap();
        assert!(runtime.skill(&haiku).await.is_err());
        // An upgrade is picked up: the new package's description is what runs see.
        let upgraded = kelp_registry::package::write_package(
            "name = \"test/haiku\"\nversion = \"0.2.0\"\nkind = \"skill\"\ndescription = \"d\"\n",
            None,
            Some("---\nname: haiku\ndescription: Write haiku, 5-7-5\n---\nBody.\n"),
            None,
        )
        .unwrap();
        runtime
            .install(
                &upgraded,
                InstallOptions {
                    config: json!({}),
                    ..InstallOptions::default()
                },
            )
            .await
            .unwrap();
        let now = runtime.skill(&haiku).await.unwrap().unwrap();
        assert_eq!(now.description, "Write haiku, 5-7-5");
        // A removed plugin is no skill any more.
        assert!(runtime.remove(&haiku).await.unwrap());
        assert!(runtime.skill(&haiku).await.unwrap().is_none());
    }
);

both_backends!(agents_crud, |s: TestServer| async move {
    let alice = s.user("alice").await;
    let tool = install_tool(&s).await;
    let skill = install_skill(&s, "summarise", "Summarise a text").await;

    let (status, created) = s
        .send(
            "POST",
            "/api/agents",
            Some(&alice),
            Some(json!({
                "name": "helper",
                "instructions": "Be brief.",
                "provider": {"plugin": "openai", "model": "gpt-test", "max_tokens": 512, "temperature": 0.5},
                "tools": [tool],
                "skills": [skill],
            })),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(created["max_steps"], 10, "default max_steps");
    assert_eq!(created["tools"], json!([tool]));
    assert_eq!(created["provider"]["temperature"], 0.5);
    let id = created["id"].as_str().unwrap().to_owned();

    let (status, got) = s
        .send("GET", &format!("/api/agents/{id}"), Some(&alice), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got, created);

    // A tool no enabled instance offers is refused by name.
    let mut bad = agent_body("other");
    bad["tools"] = json!(["hostile/no-such-tool"]);
    let (status, body) = s.send("POST", "/api/agents", Some(&alice), Some(bad)).await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("hostile/no-such-tool"),
        "{body}"
    );

    // Names are unique per owner, on create and on rename.
    let (status, body) = s
        .send(
            "POST",
            "/api/agents",
            Some(&alice),
            Some(agent_body("helper")),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "conflict");
    let second = create_agent(&s, &alice, "second").await;
    let (status, _) = s
        .send(
            "PATCH",
            &format!("/api/agents/{second}"),
            Some(&alice),
            Some(json!({"name": "helper"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);

    // PATCH changes only what it names.
    let (status, patched) = s
        .send(
            "PATCH",
            &format!("/api/agents/{id}"),
            Some(&alice),
            Some(json!({"max_steps": 3, "tools": []})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(patched["max_steps"], 3);
    assert_eq!(patched["tools"], json!([]));
    assert_eq!(patched["instructions"], "Be brief.");
    assert_eq!(patched["provider"], created["provider"]);
    assert_eq!(patched["name"], "helper");

    let (status, list) = s.send("GET", "/api/agents", Some(&alice), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(list["total"], 2);
    assert_eq!(ids(&list), vec![id.as_str(), second.as_str()], "by name");
    let (_, page) = s
        .send("GET", "/api/agents?limit=1", Some(&alice), None)
        .await;
    assert_eq!(
        (page["total"].as_i64(), page["next_offset"].as_i64()),
        (Some(2), Some(1))
    );

    let (status, _) = s
        .send("DELETE", &format!("/api/agents/{id}"), Some(&alice), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    for method in ["GET", "DELETE"] {
        let (status, body) = s
            .send(method, &format!("/api/agents/{id}"), Some(&alice), None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method}: {body}");
    }
    // The name is free again.
    create_agent(&s, &alice, "helper").await;
});

both_backends!(sessions_and_messages, |s: TestServer| async move {
    let alice = s.user("alice").await;
    let agent = create_agent(&s, &alice, "helper").await;

    let first = create_session(&s, &alice, json!({"title": "First", "agent_id": agent})).await;
    let id = first["id"].as_str().unwrap().to_owned();
    assert_eq!(first["agent_id"], agent.as_str());
    let workspace = std::path::PathBuf::from(first["workspace"].as_str().unwrap());
    assert!(workspace.is_dir(), "{}", workspace.display());
    assert!(
        workspace.starts_with(s.dir.path().canonicalize().unwrap())
            || workspace.starts_with(s.dir.path()),
        "workspace under the data directory: {}",
        workspace.display()
    );
    std::fs::write(workspace.join("notes.txt"), "x").unwrap();

    // The client cannot choose where the workspace is.
    let (status, body) = s
        .send(
            "POST",
            "/api/sessions",
            Some(&alice),
            Some(json!({"title": "x", "workspace": "/etc"})),
        )
        .await;
    assert!(status.is_client_error(), "{status} {body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("workspace")
    );

    // Newest-updated first; an update moves a session to the top.
    let mut later = Vec::new();
    for title in ["Second", "Third"] {
        tokio::time::sleep(std::time::Duration::from_millis(3)).await;
        later.push(
            create_session(&s, &alice, json!({"title": title})).await["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let (_, list) = s.send("GET", "/api/sessions", Some(&alice), None).await;
    assert_eq!(
        ids(&list),
        vec![later[1].as_str(), later[0].as_str(), id.as_str()]
    );
    assert_eq!(list["total"], 3);
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    let (status, renamed) = s
        .send(
            "PATCH",
            &format!("/api/sessions/{id}"),
            Some(&alice),
            Some(json!({"title": "Renamed"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{renamed}");
    assert_eq!(renamed["agent_id"], agent.as_str(), "untouched");
    let (_, page) = s
        .send("GET", "/api/sessions?limit=2", Some(&alice), None)
        .await;
    assert_eq!(ids(&page), vec![id.as_str(), later[1].as_str()]);
    assert_eq!(page["next_offset"], 2);
    let (_, rest) = s
        .send("GET", "/api/sessions?limit=2&offset=2", Some(&alice), None)
        .await;
    assert_eq!(ids(&rest), vec![later[0].as_str()]);
    assert_eq!(rest["next_offset"], Value::Null);

    // Messages: empty, then in sequence order as the agent loop appends them.
    let messages = format!("/api/sessions/{id}/messages");
    let (status, empty) = s.send("GET", &messages, Some(&alice), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (
            empty["total"].as_i64(),
            empty["items"].as_array().map(Vec::len)
        ),
        (Some(0), Some(0))
    );
    let db = s.state.db();
    for (role, text) in [("user", "hi"), ("assistant", "hello"), ("user", "bye")] {
        db.append_message(&id, role, &json!({"text": text}))
            .await
            .unwrap()
            .unwrap();
    }
    let (_, all) = s.send("GET", &messages, Some(&alice), None).await;
    assert_eq!(all["total"], 3);
    let seqs: Vec<i64> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["seq"].as_i64().unwrap())
        .collect();
    assert_eq!(seqs, vec![1, 2, 3]);
    assert_eq!(all["items"][1]["role"], "assistant");
    assert_eq!(all["items"][1]["content"], json!({"text": "hello"}));
    let (_, tail) = s
        .send(
            "GET",
            &format!("{messages}?limit=1&offset=2"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(tail["items"][0]["content"]["text"], "bye");
    assert_eq!(tail["next_offset"], Value::Null);

    // Deleting the agent keeps the session (and its history), without an agent.
    let (status, _) = s
        .send(
            "DELETE",
            &format!("/api/agents/{agent}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (_, kept) = s
        .send("GET", &format!("/api/sessions/{id}"), Some(&alice), None)
        .await;
    assert_eq!(kept["agent_id"], Value::Null);
    let (_, history) = s.send("GET", &messages, Some(&alice), None).await;
    assert_eq!(history["total"], 3);

    // A session can be given another agent, and detached again.
    let other = create_agent(&s, &alice, "other").await;
    let (status, body) = s
        .send(
            "PATCH",
            &format!("/api/sessions/{id}"),
            Some(&alice),
            Some(json!({"agent_id": other})),
        )
        .await;
    assert_eq!(
        (status, body["agent_id"].as_str()),
        (StatusCode::OK, Some(other.as_str()))
    );
    let (status, body) = s
        .send(
            "PATCH",
            &format!("/api/sessions/{id}"),
            Some(&alice),
            Some(json!({"agent_id": null})),
        )
        .await;
    assert_eq!((status, &body["agent_id"]), (StatusCode::OK, &Value::Null));
    assert_eq!(body["title"], "Renamed");

    // Delete removes the session, its messages and its workspace.
    let (status, _) = s
        .send("DELETE", &format!("/api/sessions/{id}"), Some(&alice), None)
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(!workspace.exists());
    for path in [format!("/api/sessions/{id}"), messages.clone()] {
        let (status, _) = s.send("GET", &path, Some(&alice), None).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{path}");
    }
    assert_eq!(
        count(
            &s,
            "SELECT COUNT(*) AS n FROM messages WHERE session_id = $1",
            &id
        )
        .await,
        0
    );
    assert!(
        db.append_message(&id, "user", &json!({}))
            .await
            .unwrap()
            .is_none()
    );
});

both_backends!(
    settings_schema_defaults_and_patch,
    |s: TestServer| async move {
        let alice = s.user("alice").await;
        let (status, schema) = s
            .send("GET", "/api/settings/schema", Some(&alice), None)
            .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(schema["type"], "object");
        assert_eq!(schema["additionalProperties"], false);
        assert_eq!(
            schema["properties"]["theme"]["enum"],
            json!(["light", "dark", "system"])
        );

        let (status, defaults) = s.send("GET", "/api/settings", Some(&alice), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            defaults,
            json!({"budget": {}, "default_agent_id": null, "theme": "system", "timezone": "UTC", "locale": "en"})
        );

        let (status, patched) = s
            .send(
                "PATCH",
                "/api/settings",
                Some(&alice),
                Some(json!({"theme": "dark", "timezone": "Europe/Berlin"})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{patched}");
        assert_eq!(
            (patched["theme"].as_str(), patched["timezone"].as_str()),
            (Some("dark"), Some("Europe/Berlin"))
        );
        // A second patch merges; null resets to the default.
        let (_, merged) = s
            .send(
                "PATCH",
                "/api/settings",
                Some(&alice),
                Some(json!({"locale": "pt-BR", "theme": null})),
            )
            .await;
        assert_eq!(
            merged,
            json!({"budget": {}, "default_agent_id": null, "theme": "system", "timezone": "Europe/Berlin", "locale": "pt-BR"})
        );
        let (_, read) = s.send("GET", "/api/settings", Some(&alice), None).await;
        assert_eq!(read, merged);

        // Invalid patches are refused naming the field, and change nothing.
        for (patch, field) in [
            (json!({"theme": "pink"}), "theme"),
            (json!({"theme": 3}), "theme"),
            (json!({"timezone": "../../etc/passwd"}), "timezone"),
            (json!({"timezone": ""}), "timezone"),
            (json!({"locale": ["en"]}), "locale"),
            (json!({"font_size": 12}), "font_size"),
            (json!({"default_agent_id": "nope"}), "default_agent_id"),
        ] {
            let (status, body) = s
                .send("PATCH", "/api/settings", Some(&alice), Some(patch.clone()))
                .await;
            assert_eq!(status, StatusCode::BAD_REQUEST, "{patch}: {body}");
            let message = body["error"]["message"].as_str().unwrap();
            assert!(message.contains(field), "{patch}: {message}");
        }
        let (_, unchanged) = s.send("GET", "/api/settings", Some(&alice), None).await;
        assert_eq!(unchanged, merged);

        // The default agent is used by sessions that name none, and reads as null once deleted.
        let agent = create_agent(&s, &alice, "helper").await;
        let (status, body) = s
            .send(
                "PATCH",
                "/api/settings",
                Some(&alice),
                Some(json!({"default_agent_id": agent})),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let session = create_session(&s, &alice, json!({})).await;
        assert_eq!(session["agent_id"], agent.as_str());
        s.send(
            "DELETE",
            &format!("/api/agents/{agent}"),
            Some(&alice),
            None,
        )
        .await;
        let (_, read) = s.send("GET", "/api/settings", Some(&alice), None).await;
        assert_eq!(read["default_agent_id"], Value::Null);
        let session = create_session(&s, &alice, json!({})).await;
        assert_eq!(session["agent_id"], Value::Null);
    }
);

both_backends!(users_see_only_their_own, |s: TestServer| async move {
    let admin = s.setup_admin().await;
    let alice = s.user("alice").await;
    let bob = s.user("bob").await;

    // The same agent name is fine for different users.
    let alice_agent = create_agent(&s, &alice, "helper").await;
    let bob_agent = create_agent(&s, &bob, "helper").await;
    let alice_session = create_session(&s, &alice, json!({"agent_id": alice_agent})).await["id"]
        .as_str()
        .unwrap()
        .to_owned();
    create_session(&s, &bob, json!({})).await;
    s.send(
        "PATCH",
        "/api/settings",
        Some(&alice),
        Some(json!({"theme": "dark"})),
    )
    .await;

    for (who, token) in [("bob", &bob), ("admin", &admin)] {
        let agent = format!("/api/agents/{alice_agent}");
        let session = format!("/api/sessions/{alice_session}");
        let messages = format!("{session}/messages");
        let cases = [
            ("GET", &agent, None),
            ("PATCH", &agent, Some(json!({"name": "mine"}))),
            ("DELETE", &agent, None),
            ("GET", &session, None),
            ("PATCH", &session, Some(json!({"title": "mine"}))),
            ("DELETE", &session, None),
            ("GET", &messages, None),
        ];
        for (method, path, body) in cases {
            let (status, response) = s.send(method, path, Some(token), body).await;
            assert_eq!(
                status,
                StatusCode::NOT_FOUND,
                "{who} {method} {path}: {response}"
            );
            assert_eq!(response["error"]["code"], "not_found");
        }
        // Another's agent cannot be borrowed for one's own session or default either.
        let (status, body) = s
            .send(
                "POST",
                "/api/sessions",
                Some(token),
                Some(json!({"agent_id": alice_agent})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{who}: {body}");
        let (status, _) = s
            .send(
                "PATCH",
                "/api/settings",
                Some(token),
                Some(json!({"default_agent_id": alice_agent})),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{who}");
        let (_, settings) = s.send("GET", "/api/settings", Some(token), None).await;
        assert_eq!(settings["theme"], "system", "{who} sees their own settings");
    }
    let (_, own) = s.send("GET", "/api/sessions", Some(&bob), None).await;
    let (status, body) = s
        .send(
            "PATCH",
            &format!("/api/sessions/{}", ids(&own)[0]),
            Some(&bob),
            Some(json!({"agent_id": alice_agent})),
        )
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");

    // Lists show only one's own.
    for (token, agents, sessions) in [(&alice, 1, 1), (&bob, 1, 1), (&admin, 0, 0)] {
        let (_, list) = s.send("GET", "/api/agents", Some(token), None).await;
        assert_eq!(list["total"], agents);
        let (_, list) = s.send("GET", "/api/sessions", Some(token), None).await;
        assert_eq!(list["total"], sessions);
    }
    let (_, list) = s.send("GET", "/api/agents", Some(&bob), None).await;
    assert_eq!(ids(&list), vec![bob_agent.as_str()]);
    // Alice's things are intact after all that.
    let (status, _) = s
        .send(
            "GET",
            &format!("/api/sessions/{alice_session}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, agent) = s
        .send(
            "GET",
            &format!("/api/agents/{alice_agent}"),
            Some(&alice),
            None,
        )
        .await;
    assert_eq!(agent["name"], "helper");

    // Without a token: 401.
    for path in [
        "/api/agents",
        "/api/sessions",
        "/api/settings",
        "/api/settings/schema",
    ] {
        let (status, _) = s.send("GET", path, None, None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{path}");
    }
});

both_backends!(
    bad_input_is_4xx_with_the_envelope,
    |s: TestServer| async move {
        let alice = s.user("alice").await;
        let agent = create_agent(&s, &alice, "helper").await;
        let session = create_session(&s, &alice, json!({})).await["id"]
            .as_str()
            .unwrap()
            .to_owned();
        let agent_path = format!("/api/agents/{agent}");
        let session_path = format!("/api/sessions/{session}");
        let huge = "x".repeat(100 * 1024 + 1);
        let provider = json!({"plugin": "openai", "model": "m"});
        let cases: Vec<(&str, &str, String, u16)> = vec![
            ("POST", "/api/agents", "{not json".into(), 400),
            (
                "POST",
                "/api/agents",
                json!({"name": 5, "provider": provider}).to_string(),
                422,
            ),
            ("POST", "/api/agents", json!({"name": "a"}).to_string(), 422),
            (
                "POST",
                "/api/agents",
                json!({"name": "a", "provider": provider, "owner_id": "x"}).to_string(),
                422,
            ),
            (
                "POST",
                "/api/agents",
                json!({"name": "a", "provider": {"plugin": "p", "model": "m", "extra": 1}})
                    .to_string(),
                422,
            ),
            (
                "POST",
                "/api/agents",
                json!({"name": "", "provider": provider}).to_string(),
                400,
            ),
            (
                "POST",
                "/api/agents",
                json!({"name": "x".repeat(65), "provider": provider}).to_string(),
                400,
            ),
            (
                "POST",
                "/api/agents",
                json!({"name": "a", "provider": provider, "instructions": huge}).to_string(),
                400,
            ),
            (
                "POST",
                "/api/agents",
                json!({"name": "a", "provider": provider, "max_steps": 0}).to_string(),
                400,
            ),
            (
                "POST",
                "/api/agents",
                json!({"name": "a", "provider": provider, "max_steps": 101}).to_string(),
                400,
            ),
            (
                "POST",
                "/api/agents",
                json!({"name": "a", "provider": provider, "max_steps": "ten"}).to_string(),
                422,
            ),
            (
                "POST",
                "/api/agents",
                json!({"name": "a", "provider": {"plugin": "p", "model": "m", "temperature": 2.5}})
                    .to_string(),
                400,
            ),
            (
                "POST",
                "/api/agents",
                json!({"name": "a", "provider": {"plugin": "p", "model": "m", "max_tokens": -1}})
                    .to_string(),
                422,
            ),
            (
                "POST",
                "/api/agents",
                json!({"name": "a", "provider": {"plugin": "", "model": "m"}}).to_string(),
                400,
            ),
            (
                "POST",
                "/api/agents",
                json!({"name": "a", "provider": provider, "tools": ["nope/tool"]}).to_string(),
                400,
            ),
            (
                "POST",
                "/api/agents",
                json!({"name": "a", "provider": provider, "skills": [""]}).to_string(),
                400,
            ),
            (
                "PATCH",
                &agent_path,
                json!({"instructions": huge}).to_string(),
                400,
            ),
            (
                "PATCH",
                &agent_path,
                json!({"name": null, "id": "x"}).to_string(),
                422,
            ),
            (
                "PATCH",
                &agent_path,
                json!({"max_steps": 1000}).to_string(),
                400,
            ),
            ("PATCH", &agent_path, "[]".into(), 422),
            (
                "PATCH",
                "/api/agents/unknown-id",
                json!({"max_steps": 5}).to_string(),
                404,
            ),
            ("GET", "/api/agents/unknown-id", String::new(), 404),
            ("DELETE", "/api/agents/unknown-id", String::new(), 404),
            ("POST", "/api/sessions", "{\"title\":".into(), 400),
            (
                "POST",
                "/api/sessions",
                json!({"title": 7}).to_string(),
                422,
            ),
            (
                "POST",
                "/api/sessions",
                json!({"workspace": "/tmp"}).to_string(),
                422,
            ),
            (
                "POST",
                "/api/sessions",
                json!({"agent_id": "unknown-id"}).to_string(),
                400,
            ),
            (
                "POST",
                "/api/sessions",
                json!({"title": "t".repeat(201)}).to_string(),
                400,
            ),
            (
                "PATCH",
                &session_path,
                json!({"agent_id": 5}).to_string(),
                422,
            ),
            (
                "PATCH",
                &session_path,
                json!({"workspace": "/"}).to_string(),
                422,
            ),
            (
                "PATCH",
                &session_path,
                json!({"agent_id": "unknown-id"}).to_string(),
                400,
            ),
            (
                "PATCH",
                "/api/sessions/unknown-id",
                json!({"title": "x"}).to_string(),
                404,
            ),
            ("GET", "/api/sessions/unknown-id", String::new(), 404),
            (
                "GET",
                "/api/sessions/unknown-id/messages",
                String::new(),
                404,
            ),
            ("DELETE", "/api/sessions/unknown-id", String::new(), 404),
            ("DELETE", "/api/sessions/..%2F..%2Fetc", String::new(), 404),
            ("PATCH", "/api/settings", "{oops".into(), 400),
            (
                "PATCH",
                "/api/settings",
                json!({"theme": "neon"}).to_string(),
                400,
            ),
            (
                "PATCH",
                "/api/settings",
                json!({"unknown": true}).to_string(),
                400,
            ),
            // Not an object: 422 like every body of the wrong shape.
            ("PATCH", "/api/settings", "42".into(), 422),
        ];
        for (method, path, body, expected) in cases {
            let mut req = s
                .http
                .request(method.parse().unwrap(), s.url(path))
                .bearer_auth(&alice);
            if !body.is_empty() {
                req = req.header("content-type", "application/json").body(body);
            }
            let resp = req.send().await.unwrap();
            let status = resp.status().as_u16();
            let body: Value = resp.json().await.unwrap_or_default();
            assert_eq!(status, expected, "{method} {path}: {body}");
            assert!(
                body["error"]["code"].is_string() && body["error"]["message"].is_string(),
                "{method} {path}: {body}"
            );
        }
        // Nothing of the above changed the agent or the session.
        let (_, a) = s.send("GET", &agent_path, Some(&alice), None).await;
        assert_eq!(
            (a["name"].as_str(), a["max_steps"].as_i64()),
            (Some("helper"), Some(10))
        );
        let (_, list) = s.send("GET", "/api/sessions", Some(&alice), None).await;
        assert_eq!(list["total"], 1);
    }
);

both_backends!(
    deleting_a_user_removes_their_data,
    |s: TestServer| async move {
        let alice = s.user("alice").await;
        let bob = s.user("bob").await;
        for token in [&alice, &bob] {
            let agent = create_agent(&s, token, "helper").await;
            let session = create_session(&s, token, json!({"agent_id": agent})).await;
            s.state
                .db()
                .append_message(
                    session["id"].as_str().unwrap(),
                    "user",
                    &json!({"text": "hi"}),
                )
                .await
                .unwrap()
                .unwrap();
            s.send(
                "PATCH",
                "/api/settings",
                Some(token),
                Some(json!({"theme": "light"})),
            )
            .await;
        }
        let (_, me) = s.send("GET", "/api/me", Some(&alice), None).await;
        let alice_id = me["id"].as_str().unwrap().to_owned();

        sqlx::query("DELETE FROM users WHERE id = $1")
            .bind(&alice_id)
            .execute(&s.state.db().pool)
            .await
            .unwrap();

        for table in ["agents", "chat_sessions"] {
            let sql = format!("SELECT COUNT(*) AS n FROM {table} WHERE owner_id = $1");
            assert_eq!(count(&s, &sql, &alice_id).await, 0, "{table}");
        }
        assert_eq!(
            count(
                &s,
                "SELECT COUNT(*) AS n FROM user_settings WHERE user_id = $1",
                &alice_id
            )
            .await,
            0
        );
        // Only Bob's message is left.
        assert_eq!(
            count(
                &s,
                "SELECT COUNT(*) AS n FROM messages WHERE role = $1",
                "user"
            )
            .await,
            1
        );
        let (_, agents) = s.send("GET", "/api/agents", Some(&bob), None).await;
        assert_eq!(agents["total"], 1);
        let (_, sessions) = s.send("GET", "/api/sessions", Some(&bob), None).await;
        assert_eq!(sessions["total"], 1);
    }
);
