//! Invite codes, registration, password changes and admin management of users, through real
//! HTTP on both databases.

use kelp::store::invites::NewInvites;
use kelp_tests::both_backends;
use kelp_tests::server::TestServer;
use reqwest::StatusCode;
use serde_json::{Value, json};

/// Registers `username` with `invite`; returns the status and body.
async fn register(s: &TestServer, invite: &str, username: &str) -> (StatusCode, Value) {
    s.send(
        "POST",
        "/api/auth/register",
        None,
        Some(json!({"invite": invite, "username": username, "password": "new-user-password"})),
    )
    .await
}

async fn new_invite(s: &TestServer, admin: &str, terms: Value) -> Value {
    let (status, body) = s
        .send("POST", "/api/invites", Some(admin), Some(terms))
        .await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    body
}

async fn login(s: &TestServer, username: &str, password: &str) -> (StatusCode, Value) {
    s.send(
        "POST",
        "/api/auth/login",
        None,
        Some(json!({"username": username, "password": password})),
    )
    .await
}

both_backends!(invites_and_registration, |s: TestServer| async move {
    let admin = s.setup_admin().await;

    // A default invite: role user, one use, no expiry; the code is shown once.
    let invite = new_invite(&s, &admin, json!({})).await;
    let code = invite["code"].as_str().unwrap().to_owned();
    assert!(code.starts_with("kinv_") && code.len() >= 5 + 32, "{code}");
    assert_eq!(
        (&invite["role"], &invite["max_uses"], &invite["uses"]),
        (&json!("user"), &json!(1), &json!(0))
    );
    assert!(invite["expires_at_ms"].is_null());

    let (status, grant) = register(&s, &code, "carol").await;
    assert_eq!(status, StatusCode::CREATED, "{grant}");
    let carol = grant["token"].as_str().unwrap();
    let (_, me) = s.send("GET", "/api/me", Some(carol), None).await;
    assert_eq!(
        (&me["username"], &me["role"]),
        (&json!("carol"), &json!("user"))
    );

    // Used up now.
    let (status, body) = register(&s, &code, "dave").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "invite_used_up");
    let (status, body) = register(&s, "kinv_00000000000000000000000000000000", "dave").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "invite_unknown");

    // An admin invite with several uses and an expiry; a taken username does not spend a use.
    let multi = new_invite(
        &s,
        &admin,
        json!({"role": "admin", "max_uses": 3, "expires_in_hours": 24}),
    )
    .await;
    assert!(multi["expires_at_ms"].as_i64().unwrap() > multi["created_at_ms"].as_i64().unwrap());
    let multi_code = multi["code"].as_str().unwrap();
    let (status, body) = register(&s, multi_code, "carol").await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "username_taken");
    let (status, body) = register(&s, multi_code, "erin").await;
    assert_eq!(status, StatusCode::CREATED, "{body}");
    assert_eq!(body["user"]["role"], "admin");

    // Revoked invites admit nobody.
    let multi_id = multi["id"].as_str().unwrap();
    let (status, _) = s
        .send(
            "DELETE",
            &format!("/api/invites/{multi_id}"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    let (status, body) = register(&s, multi_code, "frank").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "invite_revoked");

    // Expired invites admit nobody (the API cannot make one already expired).
    let admin_id = s.send("GET", "/api/me", Some(&admin), None).await.1["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let expired_code = "kinv_expired-for-the-test";
    s.state
        .db()
        .create_invites(NewInvites {
            created_by: &admin_id,
            role: "user",
            max_uses: 1,
            expires_at_ms: Some(kelp::store::now_ms() - 1),
            code_sha256s: &[kelp::util::sha256_hex(expired_code.as_bytes())],
        })
        .await
        .unwrap();
    let (status, body) = register(&s, expired_code, "frank").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "invite_expired");

    // A batch: same terms, distinct codes.
    let (status, batch) = s
        .send(
            "POST",
            "/api/invites/batch",
            Some(&admin),
            Some(json!({"count": 3, "max_uses": 2})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{batch}");
    let codes: std::collections::HashSet<_> = batch["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            assert_eq!(i["max_uses"], 2);
            i["code"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(codes.len(), 3);

    // The list pages, counts uses, and never shows a code.
    let (status, page) = s
        .send("GET", "/api/invites?limit=2", Some(&admin), None)
        .await;
    assert_eq!(status, StatusCode::OK, "{page}");
    assert_eq!(
        (&page["total"], &page["next_offset"]),
        (&json!(6), &json!(2))
    );
    let (_, all) = s.send("GET", "/api/invites", Some(&admin), None).await;
    let items = all["items"].as_array().unwrap();
    assert!(items.iter().all(|i| i.get("code").is_none()));
    let listed = |id: &str| items.iter().find(|i| i["id"] == id).unwrap().clone();
    assert_eq!(listed(invite["id"].as_str().unwrap())["uses"], 1);
    assert_eq!(
        (&listed(multi_id)["uses"], &listed(multi_id)["revoked"]),
        (&json!(1), &json!(true))
    );

    // Users cannot see or touch invites.
    let (status, body) = s.send("GET", "/api/invites", Some(carol), None).await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    assert_eq!(body["error"]["code"], "forbidden");
    for (method, path, body) in [
        ("POST", "/api/invites".to_owned(), Some(json!({}))),
        (
            "POST",
            "/api/invites/batch".to_owned(),
            Some(json!({"count": 1})),
        ),
        (
            "DELETE",
            format!("/api/invites/{}", invite["id"].as_str().unwrap()),
            None,
        ),
    ] {
        let (status, body) = s.send(method, &path, Some(carol), body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {body}");
    }
    let (_, all_after) = s.send("GET", "/api/invites", Some(&admin), None).await;
    assert_eq!(all_after["total"], 6);
    assert!(
        all_after["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|i| i["revoked"] == false || i["id"] == multi_id)
    );
});

both_backends!(
    concurrent_registrations_on_a_one_use_invite,
    |s: TestServer| async move {
        let admin = s.setup_admin().await;
        let invite = new_invite(&s, &admin, json!({"max_uses": 1})).await;
        let code = invite["code"].as_str().unwrap();
        let names = ["r1", "r2", "r3", "r4"];
        let results =
            futures::future::join_all(names.iter().map(|name| register(&s, code, name))).await;
        let created = results
            .iter()
            .filter(|(status, _)| *status == StatusCode::CREATED)
            .count();
        assert_eq!(created, 1, "{results:?}");
        for (status, body) in &results {
            if *status != StatusCode::CREATED {
                assert_eq!(*status, StatusCode::FORBIDDEN, "{body}");
                assert_eq!(body["error"]["code"], "invite_used_up");
            }
        }
        let (_, users) = s.send("GET", "/api/admin/users", Some(&admin), None).await;
        assert_eq!(users["total"], 2, "{users}");
        let (_, invites) = s.send("GET", "/api/invites", Some(&admin), None).await;
        assert_eq!(invites["items"][0]["uses"], 1);
    }
);

both_backends!(
    change_password_ends_other_sessions,
    |s: TestServer| async move {
        s.setup_admin().await;
        let old_session = s.user("alice").await;
        let (_, grant) = login(&s, "alice", "user-password").await;
        let current = grant["token"].as_str().unwrap().to_owned();
        let (_, api_token) = s
            .send(
                "POST",
                "/api/tokens",
                Some(&current),
                Some(json!({"name": "script"})),
            )
            .await;
        let api_token = api_token["token"].as_str().unwrap().to_owned();

        let change = |current_password: &str, new_password: &str| json!({"current_password": current_password, "new_password": new_password});
        let (status, body) = s
            .send(
                "POST",
                "/api/auth/change-password",
                Some(&current),
                Some(change("not-my-password", "brand-new-password")),
            )
            .await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
        assert_eq!(body["error"]["code"], "wrong_password");
        let (status, body) = s
            .send(
                "POST",
                "/api/auth/change-password",
                Some(&current),
                Some(change("user-password", "short")),
            )
            .await;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
        // Nothing changed so far.
        let (status, _) = s.send("GET", "/api/me", Some(&old_session), None).await;
        assert_eq!(status, StatusCode::OK);

        let (status, body) = s
            .send(
                "POST",
                "/api/auth/change-password",
                Some(&current),
                Some(change("user-password", "brand-new-password")),
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT, "{body}");
        let (status, _) = s.send("GET", "/api/me", Some(&old_session), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
        let (status, _) = s.send("GET", "/api/me", Some(&current), None).await;
        assert_eq!(status, StatusCode::OK);
        let (status, _) = s.send("GET", "/api/me", Some(&api_token), None).await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(
            login(&s, "alice", "user-password").await.0,
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(
            login(&s, "alice", "brand-new-password").await.0,
            StatusCode::OK
        );

        // Through an API token, every login session ends.
        let (_, grant) = login(&s, "alice", "brand-new-password").await;
        let session = grant["token"].as_str().unwrap().to_owned();
        let (status, _) = s
            .send(
                "POST",
                "/api/auth/change-password",
                Some(&api_token),
                Some(change("brand-new-password", "third-password")),
            )
            .await;
        assert_eq!(status, StatusCode::NO_CONTENT);
        let (status, _) = s.send("GET", "/api/me", Some(&session), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);

        let (status, _) = s
            .send(
                "POST",
                "/api/auth/change-password",
                None,
                Some(change("x", "yyyyyyyyyy")),
            )
            .await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
);

both_backends!(admin_manages_users, |s: TestServer| async move {
    let admin = s.setup_admin().await;
    let (_, me) = s.send("GET", "/api/me", Some(&admin), None).await;
    let admin_id = me["id"].as_str().unwrap().to_owned();

    let (status, bob) = s
        .send(
            "POST",
            "/api/admin/users",
            Some(&admin),
            Some(json!({"username": "bob", "password": "bob-password", "role": "user"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{bob}");
    assert_eq!(
        (&bob["display_name"], &bob["active"]),
        (&json!("bob"), &json!(true))
    );
    let bob_id = bob["id"].as_str().unwrap().to_owned();
    let (status, body) = s
        .send(
            "POST",
            "/api/admin/users",
            Some(&admin),
            Some(json!({"username": "bob", "password": "other-password"})),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    assert_eq!(body["error"]["code"], "username_taken");

    let (_, grant) = login(&s, "bob", "bob-password").await;
    let bob_session = grant["token"].as_str().unwrap().to_owned();
    let (_, created) = s
        .send(
            "POST",
            "/api/tokens",
            Some(&bob_session),
            Some(json!({"name": "bot"})),
        )
        .await;
    let bob_token = created["token"].as_str().unwrap().to_owned();

    let (status, page) = s
        .send("GET", "/api/admin/users?limit=1", Some(&admin), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(
        (&page["total"], &page["next_offset"]),
        (&json!(2), &json!(1))
    );
    assert!(page["items"][0].get("password_hash").is_none());
    let user_path = format!("/api/admin/users/{bob_id}");
    let (status, got) = s.send("GET", &user_path, Some(&admin), None).await;
    assert_eq!((status, &got["username"]), (StatusCode::OK, &json!("bob")));

    // Promote and rename, then demote again.
    let (status, patched) = s
        .send(
            "PATCH",
            &user_path,
            Some(&admin),
            Some(json!({"display_name": "Robert", "role": "admin"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(
        (&patched["display_name"], &patched["role"]),
        (&json!("Robert"), &json!("admin"))
    );
    let (status, patched) = s
        .send(
            "PATCH",
            &user_path,
            Some(&admin),
            Some(json!({"role": "user"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{patched}");
    assert_eq!(
        (&patched["display_name"], &patched["role"]),
        (&json!("Robert"), &json!("user"))
    );

    // Deactivation stops sessions and tokens at once, and sign-in.
    let (status, body) = s
        .send(
            "POST",
            &format!("{user_path}/deactivate"),
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(
        (status, &body["active"]),
        (StatusCode::OK, &json!(false)),
        "{body}"
    );
    for token in [&bob_session, &bob_token] {
        let (status, _) = s.send("GET", "/api/me", Some(token), None).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        login(&s, "bob", "bob-password").await.0,
        StatusCode::UNAUTHORIZED
    );
    let (status, body) = s
        .send("POST", &format!("{user_path}/activate"), Some(&admin), None)
        .await;
    assert_eq!(
        (status, &body["active"]),
        (StatusCode::OK, &json!(true)),
        "{body}"
    );
    // The ended session stays ended; the token works again; bob can sign in.
    assert_eq!(
        s.send("GET", "/api/me", Some(&bob_session), None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        s.send("GET", "/api/me", Some(&bob_token), None).await.0,
        StatusCode::OK
    );
    assert_eq!(login(&s, "bob", "bob-password").await.0, StatusCode::OK);

    // A user is 403 on every admin route, even for their own account.
    let alice = s.user("alice").await;
    let alice_id = s.send("GET", "/api/me", Some(&alice), None).await.1["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let own = format!("/api/admin/users/{alice_id}");
    let denied: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", "/api/admin/users".into(), None),
        (
            "POST",
            "/api/admin/users".into(),
            Some(json!({"username": "eve", "password": "eve-password"})),
        ),
        ("GET", user_path.clone(), None),
        (
            "PATCH",
            user_path.clone(),
            Some(json!({"display_name": "x"})),
        ),
        ("DELETE", user_path.clone(), None),
        ("POST", format!("{user_path}/activate"), None),
        ("POST", format!("{user_path}/deactivate"), None),
        ("PATCH", own.clone(), Some(json!({"role": "admin"}))),
        ("GET", "/api/admin/users/unknown-id".into(), None),
    ];
    for (method, path, body) in denied {
        let (status, body) = s.send(method, &path, Some(&alice), body).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], "forbidden");
    }
    let (_, me) = s.send("GET", "/api/me", Some(&alice), None).await;
    assert_eq!(me["role"], "user");

    // An admin cannot lock themselves out, but may rename themselves.
    let self_path = format!("/api/admin/users/{admin_id}");
    for (method, path, body) in [
        ("POST", format!("{self_path}/deactivate"), None),
        ("PATCH", self_path.clone(), Some(json!({"role": "user"}))),
        ("DELETE", self_path.clone(), None),
    ] {
        let (status, body) = s.send(method, &path, Some(&admin), body).await;
        assert_eq!(status, StatusCode::CONFLICT, "{method} {path}: {body}");
        assert_eq!(body["error"]["code"], "own_account");
    }
    let (status, _) = s
        .send(
            "PATCH",
            &self_path,
            Some(&admin),
            Some(json!({"display_name": "Root"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);

    // Unknown ids are 404 on every route.
    for (method, suffix) in [
        ("GET", ""),
        ("PATCH", ""),
        ("DELETE", ""),
        ("POST", "/activate"),
        ("POST", "/deactivate"),
    ] {
        let path = format!("/api/admin/users/no-such-id{suffix}");
        let body = (method == "PATCH").then(|| json!({"display_name": "x"}));
        let (status, body) = s.send(method, &path, Some(&admin), body).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{method} {path}: {body}");
    }

    // Every route is in the generated OpenAPI document, with its security.
    let (_, doc) = s.send("GET", "/openapi.json", None, None).await;
    for (path, method) in [
        ("/api/admin/users", "get"),
        ("/api/admin/users", "post"),
        ("/api/admin/users/{id}", "patch"),
        ("/api/admin/users/{id}/activate", "post"),
        ("/api/admin/users/{id}/deactivate", "post"),
        ("/api/invites", "post"),
        ("/api/invites/batch", "post"),
        ("/api/invites/{id}", "delete"),
        ("/api/auth/change-password", "post"),
    ] {
        assert!(
            doc["paths"][path][method]["security"].is_array(),
            "{method} {path}"
        );
    }
    assert!(doc["paths"]["/api/auth/register"]["post"]["requestBody"].is_object());

    // Deleting a user deletes what they own: bob's token dies with him, and so does the
    // workspace of his session.
    let (status, session) = s
        .send(
            "POST",
            "/api/sessions",
            Some(&bob_token),
            Some(json!({"title": "bob's"})),
        )
        .await;
    assert_eq!(status, StatusCode::CREATED, "{session}");
    let workspace = std::path::PathBuf::from(session["workspace"].as_str().unwrap());
    assert!(workspace.is_dir());
    let (status, _) = s.send("DELETE", &user_path, Some(&admin), None).await;
    assert_eq!(status, StatusCode::NO_CONTENT);
    assert!(
        !workspace.exists(),
        "the deleted user's workspace is removed"
    );
    assert_eq!(
        s.send("GET", &user_path, Some(&admin), None).await.0,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        s.send("GET", "/api/me", Some(&bob_token), None).await.0,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        s.send("DELETE", &user_path, Some(&admin), None).await.0,
        StatusCode::NOT_FOUND
    );
});

both_backends!(the_last_admin_stays, |s: TestServer| async move {
    let admin = s.setup_admin().await;
    let (_, me) = s.send("GET", "/api/me", Some(&admin), None).await;
    let admin_id = me["id"].as_str().unwrap().to_owned();
    let (_, second) = s
        .send(
            "POST",
            "/api/admin/users",
            Some(&admin),
            Some(json!({"username": "second", "password": "second-password", "role": "admin"})),
        )
        .await;
    let second_id = second["id"].as_str().unwrap().to_owned();
    let (_, grant) = login(&s, "second", "second-password").await;
    let second_token = grant["token"].as_str().unwrap().to_owned();

    // Two admins demote each other at once: exactly one demotion happens.
    let second_path = format!("/api/admin/users/{second_id}");
    let admin_path = format!("/api/admin/users/{admin_id}");
    let (a, b) = tokio::join!(
        s.send(
            "PATCH",
            &second_path,
            Some(&admin),
            Some(json!({"role": "user"}))
        ),
        s.send(
            "PATCH",
            &admin_path,
            Some(&second_token),
            Some(json!({"role": "user"}))
        ),
    );
    let ok = [&a, &b]
        .iter()
        .filter(|(st, _)| *st == StatusCode::OK)
        .count();
    assert_eq!(ok, 1, "{a:?} {b:?}");
    for (status, body) in [&a, &b] {
        if *status != StatusCode::OK {
            // 409 if the loser was already past the admin check, 403 if not.
            assert!(
                body["error"]["code"] == "last_admin" || body["error"]["code"] == "forbidden",
                "{body}"
            );
        }
    }
    let db = s.state.db();
    let (users, _) = db.list_users(100, 0).await.unwrap();
    let admins: Vec<_> = users
        .iter()
        .filter(|u| u.role == "admin" && u.active)
        .collect();
    assert_eq!(admins.len(), 1, "{users:?}");

    // The guard itself, whoever asks: the sole active admin cannot be removed.
    let sole = admins[0].id.clone();
    use kelp::store::users::AccountChange;
    assert_eq!(
        db.update_user("someone-else", &sole, None, Some("user"))
            .await
            .unwrap(),
        AccountChange::LastAdmin
    );
    assert_eq!(
        db.set_user_active("someone-else", &sole, false)
            .await
            .unwrap(),
        AccountChange::LastAdmin
    );
    assert_eq!(
        db.delete_user("someone-else", &sole).await.unwrap(),
        AccountChange::LastAdmin
    );
});

both_backends!(
    bad_input_is_4xx_with_the_envelope,
    |s: TestServer| async move {
        let admin = s.setup_admin().await;
        let user = s.user("mallory").await;
        let cases: Vec<(&str, &str, Option<&str>, &str, u16)> = vec![
            ("POST", "/api/auth/register", None, "{not json", 400),
            (
                "POST",
                "/api/auth/register",
                None,
                r#"{"invite": 5, "username": "a", "password": "12345678"}"#,
                422,
            ),
            (
                "POST",
                "/api/auth/register",
                None,
                r#"{"invite": "x", "username": "a"}"#,
                422,
            ),
            (
                "POST",
                "/api/auth/register",
                None,
                r#"{"invite": "x", "username": "a", "password": "12345678", "role": "admin"}"#,
                422,
            ),
            (
                "POST",
                "/api/auth/register",
                None,
                r#"{"invite": "x", "username": "Bad Name", "password": "12345678"}"#,
                400,
            ),
            (
                "POST",
                "/api/auth/register",
                None,
                r#"{"invite": "x", "username": "ok", "password": "short"}"#,
                400,
            ),
            (
                "POST",
                "/api/auth/register",
                None,
                r#"{"invite": "x", "username": "ok", "password": "12345678", "display_name": " "}"#,
                400,
            ),
            (
                "POST",
                "/api/auth/register",
                None,
                r#"{"invite": "", "username": "ok", "password": "12345678"}"#,
                403,
            ),
            (
                "POST",
                "/api/auth/change-password",
                Some(&user),
                r#"{"current_password": "user-password"}"#,
                422,
            ),
            ("POST", "/api/auth/change-password", Some(&user), "[]", 422),
            (
                "POST",
                "/api/invites",
                Some(&admin),
                r#"{"role": "root"}"#,
                422,
            ),
            (
                "POST",
                "/api/invites",
                Some(&admin),
                r#"{"max_uses": 0}"#,
                400,
            ),
            (
                "POST",
                "/api/invites",
                Some(&admin),
                r#"{"max_uses": -1}"#,
                422,
            ),
            (
                "POST",
                "/api/invites",
                Some(&admin),
                r#"{"expires_in_hours": 0}"#,
                400,
            ),
            (
                "POST",
                "/api/invites",
                Some(&admin),
                r#"{"code": "mine"}"#,
                422,
            ),
            ("POST", "/api/invites", Some(&admin), "{", 400),
            (
                "POST",
                "/api/invites/batch",
                Some(&admin),
                r#"{"count": 0}"#,
                400,
            ),
            (
                "POST",
                "/api/invites/batch",
                Some(&admin),
                r#"{"count": 101}"#,
                400,
            ),
            ("POST", "/api/invites/batch", Some(&admin), r#"{}"#, 422),
            ("DELETE", "/api/invites/no-such-id", Some(&admin), "", 404),
            (
                "POST",
                "/api/admin/users",
                Some(&admin),
                r#"{"username": "x"}"#,
                422,
            ),
            (
                "POST",
                "/api/admin/users",
                Some(&admin),
                r#"{"username": "x", "password": "12345678", "role": "owner"}"#,
                422,
            ),
            (
                "POST",
                "/api/admin/users",
                Some(&admin),
                r#"{"username": "X!", "password": "12345678"}"#,
                400,
            ),
            (
                "PATCH",
                "/api/admin/users/no-such-id",
                Some(&admin),
                r#"{"role": 1}"#,
                422,
            ),
            (
                "PATCH",
                "/api/admin/users/no-such-id",
                Some(&admin),
                r#"{"active": false}"#,
                422,
            ),
            (
                "PATCH",
                "/api/admin/users/no-such-id",
                Some(&admin),
                r#"{"display_name": ""}"#,
                400,
            ),
        ];
        for (method, path, token, body, expected) in cases {
            let mut req = s
                .http
                .request(method.parse().unwrap(), s.url(path))
                .body(body.to_owned());
            if let Some(t) = token {
                req = req.bearer_auth(t);
            }
            if !body.is_empty() {
                req = req.header("content-type", "application/json");
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
        // Nothing was created by any of it.
        let (_, users) = s.send("GET", "/api/admin/users", Some(&admin), None).await;
        assert_eq!(users["total"], 2);
        let (_, invites) = s.send("GET", "/api/invites", Some(&admin), None).await;
        assert_eq!(invites["total"], 0);
    }
);
