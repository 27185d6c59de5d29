//! The web app's pages and assets are served by the node itself, and tickets render as QR codes
//! for their buyer only. (The pages' behaviour is tested in Chromium by `e2e/run.mjs`.)

use crate::holds::on_sale;
use crate::support::TestApp;
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test]
async fn pages_and_assets_are_served_from_the_binary() {
    let app = TestApp::spawn().await;
    for (path, page) in [
        ("/", "home"),
        ("/events/01J0000000000000000000000Z", "event"),
        ("/signin", "signin"),
        ("/me/orders", "orders"),
        ("/organizer", "organizer"),
        ("/organizer/events/01J0000000000000000000000Z", "dashboard"),
    ] {
        let response = app
            .client
            .get(format!("{}{path}", app.url))
            .send()
            .await
            .expect("page");
        assert_eq!(response.status(), StatusCode::OK, "{path}");
        assert_eq!(
            response.headers()["content-type"],
            "text/html; charset=utf-8"
        );
        let html = response.text().await.expect("html");
        assert!(html.contains(&format!("data-page=\"{page}\"")), "{path}");
        assert!(html.contains("<main id=\"main\""), "{path}");
        assert!(!html.contains("{{"), "an unfilled placeholder on {path}");
        assert!(
            !html.contains("http://") && !html.contains("https://"),
            "nothing from the internet"
        );
    }
    let script = asset(&app, "app.js", None).await;
    assert_eq!(
        script.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    assert!(script.text().await.expect("js").contains("EventSource"));
    // The watch page's player: hls.js bundled from npm at build time, an ES module with `play`.
    let player = asset(&app, "player.js", None).await;
    assert_eq!(player.status(), StatusCode::OK);
    assert_eq!(
        player.headers()["content-type"],
        "text/javascript; charset=utf-8"
    );
    let etag = player.headers()["etag"].to_str().expect("etag").to_string();
    let player = player.text().await.expect("player js");
    assert!(player.contains("isSupported"), "hls.js is in the bundle");
    assert!(player.contains("as play"), "the bundle exports play");
    // A browser that has the bundle revalidates it and is not sent its 590 KB again.
    let revalidated = asset(&app, "player.js", Some(&etag)).await;
    assert_eq!(revalidated.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(revalidated.headers()["etag"], etag.as_str());
    assert!(revalidated.bytes().await.expect("body").is_empty());
    let stale = asset(&app, "player.js", Some("\"another\"")).await;
    assert_eq!(stale.status(), StatusCode::OK, "a stale copy is replaced");
    let unknown = app.get("/assets/nope.js", None).await;
    unknown.expect_error(StatusCode::NOT_FOUND, "not_found");
    app.stop().await;
}

/// `/assets/{name}`, revalidating `if_none_match` when given.
async fn asset(app: &TestApp, name: &str, if_none_match: Option<&str>) -> reqwest::Response {
    let mut request = app.client.get(format!("{}/assets/{name}", app.url));
    if let Some(etag) = if_none_match {
        request = request.header("if-none-match", etag);
    }
    request.send().await.expect("asset")
}

#[tokio::test]
async fn a_ticket_renders_as_a_qr_code_for_its_buyer_only() {
    let sale = on_sale(TestApp::spawn().await).await;
    let (ann, _) = sale.app.register("fan").await;
    let (bob, _) = sale.app.register("fan").await;
    let hold = sale
        .hold(&ann, json!({"seat_ids": [sale.seat_ids[0]]}))
        .await
        .expect(StatusCode::CREATED);
    let order = sale
        .order(&ann, hold["id"].as_str().expect("id"), "tok_visa")
        .await
        .expect(StatusCode::CREATED);
    let order_id = order["id"].as_str().expect("order id");
    let ticket_id = order["tickets"][0]["id"].as_str().expect("ticket id");
    let path = format!("/api/v1/orders/{order_id}/tickets/{ticket_id}/qr.svg");
    let url = format!("{}{path}", sale.app.url);
    let svg = sale
        .app
        .client
        .get(&url)
        .bearer_auth(&ann)
        .send()
        .await
        .expect("qr");
    assert_eq!(svg.status(), StatusCode::OK);
    assert_eq!(svg.headers()["content-type"], "image/svg+xml");
    let body = svg.text().await.expect("svg");
    assert!(body.contains("<svg") && body.contains("<path"), "{body}");
    // The organizer may see it too; another fan may not; nobody without signing in.
    let organizer = sale
        .app
        .client
        .get(&url)
        .bearer_auth(&sale.organizer)
        .send()
        .await
        .expect("qr");
    assert_eq!(organizer.status(), StatusCode::OK);
    sale.app
        .get(&path, Some(&bob))
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    sale.app
        .get(&path, None)
        .await
        .expect_error(StatusCode::UNAUTHORIZED, "unauthorized");
    sale.app
        .get(
            &format!("/api/v1/orders/{order_id}/tickets/nope/qr.svg"),
            Some(&ann),
        )
        .await
        .expect_error(StatusCode::NOT_FOUND, "not_found");
    sale.app.stop().await;
}

/// Issue #33 (low): pages forbid framing and sniffing and carry a content security policy
/// that runs only the node's own scripts.
#[tokio::test]
async fn pages_carry_security_headers() {
    let app = TestApp::spawn().await;
    for path in [
        "/",
        "/signin",
        "/me/orders",
        "/events/01J0000000000000000000000Z/watch",
    ] {
        let response = app
            .client
            .get(format!("{}{path}", app.url))
            .send()
            .await
            .expect("page");
        let headers = response.headers();
        let csp = headers
            .get("content-security-policy")
            .unwrap_or_else(|| panic!("{path} has no content-security-policy"))
            .to_str()
            .expect("ascii");
        assert!(csp.contains("frame-ancestors 'none'"), "{path}: {csp}");
        assert!(csp.contains("script-src 'self'"), "{path}: {csp}");
        assert!(!csp.contains("unsafe-eval"), "{path}: {csp}");
        assert_eq!(headers["x-frame-options"], "DENY", "{path}");
        assert_eq!(headers["x-content-type-options"], "nosniff", "{path}");
    }
    let script = asset(&app, "app.js", None).await;
    assert_eq!(script.headers()["x-content-type-options"], "nosniff");
    app.stop().await;
}

/// Issue #33 (low): after signing in, `next` may only lead to a path on this site; `//host`,
/// `/\host` and absolute URLs lead home instead of to another site. The served app's own
/// `safeNext` is run (in Node) on each.
#[tokio::test]
async fn sign_in_never_redirects_to_another_site() {
    let app = TestApp::spawn().await;
    let script = asset(&app, "app.js", None).await.text().await.expect("js");
    let start = script
        .find("function safeNext(")
        .expect("app.js decides where `next` may lead in safeNext");
    let end = start
        + script[start..]
            .find("\n}\n")
            .expect("the function ends at column 0")
        + 3;
    let function = &script[start..end];
    let cases = json!([
        "//evil.example/x",
        "/\\evil.example",
        "/\t/evil.example",
        "https://evil.example/",
        "javascript:alert(1)",
        "",
        "/me/orders?page=2#top",
    ]);
    let program = format!(
        "{function}\nconst cases = {cases};\nconsole.log(JSON.stringify(cases.map((next) => safeNext(next, \"http://marquee.test\"))));"
    );
    let output = std::process::Command::new("node")
        .args(["-e", &program])
        .output()
        .expect("node runs (scripts/test installs it)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let answers: serde_json::Value =
        serde_json::from_slice(&output.stdout).expect("json from node");
    assert_eq!(
        answers,
        json!(["/", "/", "/", "/", "/", "/", "/me/orders?page=2#top"])
    );
    app.stop().await;
}
