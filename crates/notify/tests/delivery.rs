//! Deliveries to real receivers on this machine: a webhook receiver (axum) that checks the
//! signature the way an organizer would, and an SMTP port with nobody listening.

use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use marquee_notify::{
    verify, AddressPolicy, DeliveryError, Email, MailError, Mailer, SmtpMailer, Transience,
    WebhookDelivery, WebhookSender, WebhookUrlError, MAX_WEBHOOK_BODY, SIGNATURE_HEADER,
};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const SECRET: &str = "whsec_receiver_test";

#[derive(Default)]
struct Received {
    verified: Vec<(String, String, String)>,
}

/// A receiver: `/ok` checks the signature and answers 204, `/fail` 500, `/gone` 410, `/moved`
/// a redirect to `/ok`.
async fn receiver() -> (String, Arc<Mutex<Received>>) {
    let received = Arc::new(Mutex::new(Received::default()));
    let shared = received.clone();
    let app = axum::Router::new()
        .route(
            "/ok",
            post(move |headers: HeaderMap, body: axum::body::Bytes| {
                let shared = shared.clone();
                async move {
                    let header = headers
                        .get(SIGNATURE_HEADER)
                        .and_then(|value| value.to_str().ok())
                        .unwrap_or_default();
                    let now = chrono_now();
                    if verify(SECRET, header, &body, now, 300).is_err() {
                        return StatusCode::UNAUTHORIZED;
                    }
                    let field = |name: &str| {
                        headers
                            .get(name)
                            .and_then(|value| value.to_str().ok())
                            .unwrap_or_default()
                            .to_string()
                    };
                    shared.lock().expect("lock").verified.push((
                        field("marquee-event"),
                        field("marquee-delivery"),
                        String::from_utf8_lossy(&body).into_owned(),
                    ));
                    StatusCode::NO_CONTENT
                }
            }),
        )
        .route(
            "/fail",
            post(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "database down") }),
        )
        .route("/gone", post(|| async { StatusCode::GONE }))
        .route(
            "/moved",
            post(|| async { (StatusCode::FOUND, [("location", "/ok")]) }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = listener.local_addr().expect("address");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{address}"), received)
}

fn chrono_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|elapsed| elapsed.as_secs() as i64)
        .unwrap_or(0)
}

fn loopback_allowed() -> WebhookSender {
    WebhookSender::new(
        AddressPolicy::new(vec!["127.0.0.0/8".parse().expect("net")]),
        Duration::from_secs(5),
    )
}

fn delivery<'a>(url: &'a str, body: &'a [u8]) -> WebhookDelivery<'a> {
    WebhookDelivery {
        url,
        secret: SECRET,
        event_type: "order.confirmed",
        delivery_id: "job-42",
        body,
        timestamp: chrono_now(),
    }
}

#[tokio::test]
async fn a_receiver_verifies_the_signature_of_what_it_gets() {
    let (base, received) = receiver().await;
    let url = format!("{base}/ok");
    let body = br#"{"type":"order.confirmed","data":{"order_id":"o1"}}"#;
    let status = loopback_allowed()
        .deliver(&delivery(&url, body))
        .await
        .expect("delivered");
    assert_eq!(status, 204);
    let received = received.lock().expect("lock");
    assert_eq!(
        received.verified,
        [(
            "order.confirmed".to_string(),
            "job-42".to_string(),
            String::from_utf8_lossy(body).into_owned()
        )]
    );
}

#[tokio::test]
async fn a_wrong_secret_is_what_the_receiver_refuses() {
    let (base, received) = receiver().await;
    let url = format!("{base}/ok");
    let mut forged = delivery(&url, b"{}");
    forged.secret = "whsec_attacker";
    let error = loopback_allowed().deliver(&forged).await.expect_err("401");
    assert!(
        matches!(error, DeliveryError::Status { status: 401, .. }),
        "{error}"
    );
    assert!(received.lock().expect("lock").verified.is_empty());
}

#[tokio::test]
async fn failures_say_whether_to_try_again() {
    let (base, _) = receiver().await;
    let sender = loopback_allowed();
    let fail = format!("{base}/fail");
    let error = sender
        .deliver(&delivery(&fail, b"{}"))
        .await
        .expect_err("500");
    assert!(
        matches!(&error, DeliveryError::Status { status: 500, answer } if answer == "database down"),
        "{error}"
    );
    assert_eq!(error.transience(), Transience::Transient);
    let gone = format!("{base}/gone");
    let error = sender
        .deliver(&delivery(&gone, b"{}"))
        .await
        .expect_err("410");
    assert_eq!(error.transience(), Transience::Permanent);
    // Redirects are not followed: a receiver cannot bounce a delivery into the private network.
    let moved = format!("{base}/moved");
    let error = sender
        .deliver(&delivery(&moved, b"{}"))
        .await
        .expect_err("302");
    assert!(
        matches!(error, DeliveryError::Status { status: 302, .. }),
        "{error}"
    );
    // Nobody listening.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = closed.local_addr().expect("address");
    drop(closed);
    let nobody = format!("http://{address}/hook");
    let error = sender
        .deliver(&delivery(&nobody, b"{}"))
        .await
        .expect_err("refused");
    assert!(matches!(error, DeliveryError::Transport(_)), "{error}");
    assert_eq!(error.transience(), Transience::Transient);
}

#[tokio::test]
async fn loopback_is_refused_without_configuration_and_big_bodies_always() {
    let (base, received) = receiver().await;
    let url = format!("{base}/ok");
    let strict = WebhookSender::new(AddressPolicy::default(), Duration::from_secs(5));
    let error = strict
        .deliver(&delivery(&url, b"{}"))
        .await
        .expect_err("ssrf");
    assert!(
        matches!(
            error,
            DeliveryError::Refused(WebhookUrlError::NotPublic { .. })
        ),
        "{error}"
    );
    assert_eq!(error.transience(), Transience::Permanent);
    let huge = vec![b' '; MAX_WEBHOOK_BODY + 1];
    let error = loopback_allowed()
        .deliver(&delivery(&url, &huge))
        .await
        .expect_err("too large");
    assert!(matches!(error, DeliveryError::TooLarge { .. }), "{error}");
    assert!(received.lock().expect("lock").verified.is_empty());
}

#[tokio::test]
async fn an_unreachable_smtp_server_is_a_transient_failure() {
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let address = closed.local_addr().expect("address");
    drop(closed);
    let mailer = SmtpMailer::new(
        &format!("smtp://{address}"),
        "Marquee <tickets@marquee.test>",
        Duration::from_secs(2),
    )
    .expect("mailer");
    let error = mailer
        .send(&Email {
            to: "fan@example.com".into(),
            subject: "Your tickets".into(),
            text: "…".into(),
            id: "order-1-confirmed".into(),
        })
        .await
        .expect_err("nobody listening");
    assert!(matches!(error, MailError::Send { .. }), "{error}");
    assert_eq!(error.transience(), Transience::Transient);
    let bad = mailer
        .send(&Email {
            to: "not an address".into(),
            subject: "x".into(),
            text: "x".into(),
            id: "x".into(),
        })
        .await
        .expect_err("bad address");
    assert_eq!(bad.transience(), Transience::Permanent);
    assert!(SmtpMailer::new("smtp://x", "not a mailbox", Duration::from_secs(1)).is_err());
}
