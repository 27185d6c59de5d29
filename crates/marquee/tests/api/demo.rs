//! The demo seeder: believable data once, reused after.

use crate::support::TestApp;
use marquee::demo::{seed, SeedOutcome, DEMO_ACCOUNTS};
use reqwest::StatusCode;
use serde_json::json;
use std::collections::HashSet;

#[tokio::test]
async fn the_demo_seeds_once_and_its_accounts_work() {
    let app = TestApp::spawn().await;
    let store = app.server.as_ref().expect("server").state.store.clone();
    let outcome = seed(store.as_ref(), false).await.expect("seed");
    let SeedOutcome::Seeded { venues, events } = outcome else {
        panic!("a fresh store is seeded, got {outcome:?}");
    };
    assert!(venues >= 20, "venues in at least 20 cities: {venues}");
    assert!(events >= 200, "a few hundred events: {events}");
    assert_eq!(
        seed(store.as_ref(), false).await.expect("reseed"),
        SeedOutcome::AlreadySeeded
    );

    for account in &DEMO_ACCOUNTS {
        let login = app
            .post(
                "/api/v1/auth/login",
                None,
                json!({"email": account.email, "password": account.password}),
            )
            .await
            .expect(StatusCode::OK);
        assert_eq!(login["user"]["role"], account.role.as_str());
    }

    let mut cities = HashSet::new();
    let mut categories = HashSet::new();
    let mut path = "/api/v1/events?limit=100".to_string();
    let mut listed = 0;
    loop {
        let page = app.get(&path, None).await.expect(StatusCode::OK);
        for event in page["items"].as_array().expect("items") {
            listed += 1;
            cities.insert(
                event["venue"]["city"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            );
            categories.insert(event["category"].as_str().unwrap_or_default().to_string());
            let lat = event["venue"]["lat"].as_f64().expect("lat");
            assert!((-90.0..=90.0).contains(&lat));
        }
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/api/v1/events?limit=100&cursor={cursor}"),
            None => break,
        }
    }
    assert!(listed >= 200, "most demo events are published: {listed}");
    assert!(cities.len() >= 20, "{cities:?}");
    assert!(categories.len() >= 5, "{categories:?}");
    app.stop().await;
}

/// Issue #33 (8): `marquee demo` seeds an admin with a published password, so it refuses any
/// database but its own embedded store — a PostgreSQL URL in the environment is not seeded.
#[tokio::test]
async fn the_demo_refuses_a_database_it_was_pointed_at() {
    let data_dir = tempfile::tempdir().expect("tempdir");
    let schema = format!("demo_{}", crate::support::ulid_lower());
    let url = format!(
        "{}?options=-c%20search_path%3D{schema}",
        crate::support::postgres_url()
    );
    crate::support::sqlx_admin(&format!("CREATE SCHEMA {schema}")).await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_marquee"))
        .arg("demo")
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data_dir.path())
        .env("MARQUEE_DATABASE_URL", &url)
        .env("MARQUEE_JWT_SECRET", crate::support::JWT_SECRET)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("run marquee demo");
    let exited = tokio::time::timeout(std::time::Duration::from_secs(30), child.wait()).await;
    let _ = child.start_kill();
    let seeded: i64 = crate::support::sqlx_scalar(&format!(
        "SELECT count(*) FROM information_schema.tables WHERE table_schema = '{schema}'"
    ))
    .await;
    crate::support::sqlx_admin(&format!("DROP SCHEMA {schema} CASCADE")).await;
    let status = exited
        .expect("the demo stops at once instead of serving")
        .expect("wait");
    assert!(!status.success(), "the demo refuses to run");
    assert_eq!(
        seeded, 0,
        "nothing was created in the database it was pointed at"
    );
}
