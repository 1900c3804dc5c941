//! Known-answer vectors from the providers, every refusal, the spec rules, and "hostile headers
//! never panic and never pass".

use bytes::Bytes;
use clap::Parser;
use proptest::prelude::*;

use super::*;

// GitHub's documented example ("Validating webhook deliveries", docs.github.com).
const GITHUB_SECRET: &str = "It's a Secret to Everybody";
const GITHUB_BODY: &str = "Hello, World!";
const GITHUB_SIGNATURE_VALUE: &str =
    "sha256=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17";

// Made with the official `stripe` Node library (23.1.0, tests/senders/node_modules):
// stripe.webhooks.generateTestHeaderString({ payload: STRIPE_BODY, secret, timestamp: 1700000000 })
// for each of the two secrets.
const STRIPE_SECRET: &str = "whsec_test_secret";
const STRIPE_ROTATED_SECRET: &str = "whsec_rotated_secret";
const STRIPE_BODY: &str = r#"{"id":"evt_test_webhook","object":"event"}"#;
const STRIPE_T: i64 = 1_700_000_000;
const STRIPE_HEADER: &str =
    "t=1700000000,v1=d95c6b7477fbd7e9f90b1b0ef5f9c7ac25abca5382460e0d988c2b2a5b71b990";
const STRIPE_ROTATED_V1: &str = "e2bff083fec7577d1157ff09cbdb4504baf653937eef5e4dad80ea63dbcf65e3";

// Made with the official `standardwebhooks` Node library (1.1.1, tests/senders/node_modules):
// new Webhook(secret).sign(STANDARD_ID_VALUE, new Date(1700000000 * 1000), STANDARD_BODY).
// The first secret is the example secret of the Standard Webhooks specification.
const STANDARD_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const STANDARD_SECOND_SECRET: &str = "whsec_aG9va3JlbGF5LXNlY29uZC1zdGFuZGFyZC1rZXktMzI=";
const STANDARD_ID_VALUE: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
const STANDARD_BODY: &str = r#"{"type":"example","data":{"a":1}}"#;
const STANDARD_T: i64 = 1_700_000_000;
const STANDARD_SIG: &str = "v1,2e90yJPqvKNNgk2NtZfmlMzjbPPPEEZDEA5dB+IbC3o=";
const STANDARD_SECOND_SIG: &str = "v1,P7gpOg3L2/VvizyzDg9DIOOrH8b/L1yTr+LAF4rucvw=";

// Slack's documented example ("Verifying requests from Slack", api.slack.com), also reproduced
// with node:crypto's createHmac.
const SLACK_SECRET: &str = "8f742231b10e8888abcd99yyyzzz85a5";
const SLACK_T: i64 = 1_531_420_618;
const SLACK_BODY: &str = "token=xyzz0WbapA4vBCDEFasx0q6G&team_id=T1DC2JH3J&team_domain=testteamnow&channel_id=G8PSS9T3V&channel_name=foobar&user_id=U2CERLKJA&user_name=roadrunner&command=%2Fwebhook-collect&text=&response_url=https%3A%2F%2Fhooks.slack.com%2Fcommands%2FT1DC2JH3J%2F397700885554%2F96rGlfmibIGlgcZRskXaIFfN&trigger_id=398738663015.47445629121.803a0bc887a14d10d2c447fce8b6703c";
const SLACK_SIGNATURE_VALUE: &str =
    "v0=a2114d57b48eac39b9ad189dd8316235a7b4a8d21a10bd27519666489c69b503";

// Made with node:crypto: createHmac("sha256", "shop-secret").update('{"id":1}').digest(...).
const GENERIC_SECRET: &str = "shop-secret";
const GENERIC_BODY: &str = r#"{"id":1}"#;
const GENERIC_HEX: &str = "a655bc546aaad270cc204843a9a34d5bdf5ab1d502cbb108a8b655710c2d019d";
const GENERIC_BASE64: &str = "plW8VGqq0nDMIEhDqaNNW99asdUCy7EIqLZVcQwtAZ0=";

fn headers(pairs: &[(&str, &str)]) -> Headers {
    pairs
        .iter()
        .map(|(n, v)| ((*n).to_owned(), Bytes::copy_from_slice(v.as_bytes())))
        .collect()
}

fn github() -> Verify {
    Verify::Github {
        secret: GITHUB_SECRET.into(),
    }
}

fn stripe(secrets: &[&str]) -> Verify {
    Verify::Stripe {
        secrets: secrets.iter().map(|s| (*s).to_owned()).collect(),
        tolerance_secs: DEFAULT_TOLERANCE_SECS,
    }
}

fn standard(secrets: &[&str]) -> Verify {
    Verify::Standard {
        secrets: secrets.iter().map(|s| (*s).to_owned()).collect(),
        tolerance_secs: DEFAULT_TOLERANCE_SECS,
    }
}

fn slack() -> Verify {
    Verify::Slack {
        secret: SLACK_SECRET.into(),
        tolerance_secs: DEFAULT_TOLERANCE_SECS,
    }
}

fn generic(encoding: Encoding, prefix: &str) -> Verify {
    Verify::HmacSha256 {
        secret: GENERIC_SECRET.into(),
        header: "X-Shopify-Hmac-Sha256".into(),
        encoding,
        prefix: prefix.into(),
    }
}

fn standard_headers(id: &str, t: &str, signature: &str) -> Headers {
    headers(&[
        ("webhook-id", id),
        ("webhook-timestamp", t),
        ("webhook-signature", signature),
    ])
}

fn slack_headers(t: &str, signature: &str) -> Headers {
    headers(&[
        ("x-slack-request-timestamp", t),
        ("x-slack-signature", signature),
    ])
}

fn malformed_msg(result: Result<(), VerifyError>) -> String {
    match result {
        Err(VerifyError::Malformed(msg)) => msg,
        other => panic!("expected Malformed, got {other:?}"),
    }
}

// --- known answers ---

#[test]
fn github_documented_example_verifies() {
    let h = headers(&[("x-hub-signature-256", GITHUB_SIGNATURE_VALUE)]);
    assert_eq!(github().check(&h, GITHUB_BODY.as_bytes(), 0), Ok(()));
}

#[test]
fn stripe_library_vector_verifies() {
    let h = headers(&[("stripe-signature", STRIPE_HEADER)]);
    let spec = stripe(&[STRIPE_SECRET]);
    assert_eq!(spec.check(&h, STRIPE_BODY.as_bytes(), STRIPE_T), Ok(()));
}

#[test]
fn standard_library_vector_verifies() {
    let h = standard_headers(STANDARD_ID_VALUE, "1700000000", STANDARD_SIG);
    let spec = standard(&[STANDARD_SECRET]);
    assert_eq!(spec.check(&h, STANDARD_BODY.as_bytes(), STANDARD_T), Ok(()));
}

#[test]
fn slack_documented_example_verifies() {
    let h = slack_headers("1531420618", SLACK_SIGNATURE_VALUE);
    assert_eq!(
        slack().check(&h, SLACK_BODY.as_bytes(), SLACK_T + 60),
        Ok(())
    );
}

#[test]
fn generic_hmac_vectors_verify_in_hex_and_base64() {
    let body = GENERIC_BODY.as_bytes();
    let hex = headers(&[("x-shopify-hmac-sha256", GENERIC_HEX)]);
    assert_eq!(generic(Encoding::Hex, "").check(&hex, body, 0), Ok(()));
    let upper = headers(&[("x-shopify-hmac-sha256", &GENERIC_HEX.to_uppercase())]);
    assert_eq!(generic(Encoding::Hex, "").check(&upper, body, 0), Ok(()));
    let b64 = headers(&[("x-shopify-hmac-sha256", GENERIC_BASE64)]);
    assert_eq!(generic(Encoding::Base64, "").check(&b64, body, 0), Ok(()));
    let prefixed = headers(&[("x-shopify-hmac-sha256", &format!("sha256={GENERIC_HEX}"))]);
    assert_eq!(
        generic(Encoding::Hex, "sha256=").check(&prefixed, body, 0),
        Ok(())
    );
    assert_eq!(
        malformed_msg(generic(Encoding::Hex, "sha256=").check(&hex, body, 0)),
        "X-Shopify-Hmac-Sha256 does not start with \"sha256=\""
    );
}

// --- refusals ---

#[test]
fn tampered_body_is_refused_by_every_scheme() {
    let cases = [
        (
            github(),
            headers(&[("x-hub-signature-256", GITHUB_SIGNATURE_VALUE)]),
            GITHUB_BODY,
            0,
        ),
        (
            stripe(&[STRIPE_SECRET]),
            headers(&[("stripe-signature", STRIPE_HEADER)]),
            STRIPE_BODY,
            STRIPE_T,
        ),
        (
            standard(&[STANDARD_SECRET]),
            standard_headers(STANDARD_ID_VALUE, "1700000000", STANDARD_SIG),
            STANDARD_BODY,
            STANDARD_T,
        ),
        (
            slack(),
            slack_headers("1531420618", SLACK_SIGNATURE_VALUE),
            SLACK_BODY,
            SLACK_T,
        ),
        (
            generic(Encoding::Base64, ""),
            headers(&[("x-shopify-hmac-sha256", GENERIC_BASE64)]),
            GENERIC_BODY,
            0,
        ),
    ];
    for (spec, h, body, now) in cases {
        let mut tampered = body.as_bytes().to_vec();
        tampered.push(b' ');
        assert_eq!(
            spec.check(&h, &tampered, now),
            Err(VerifyError::Mismatch),
            "{spec:?}"
        );
    }
}

#[test]
fn wrong_secret_is_refused() {
    let body = GITHUB_BODY.as_bytes();
    let h = headers(&[("x-hub-signature-256", GITHUB_SIGNATURE_VALUE)]);
    let spec = Verify::Github {
        secret: "It's a Secret to Everybody!".into(),
    };
    assert_eq!(spec.check(&h, body, 0), Err(VerifyError::Mismatch));

    let h = headers(&[("stripe-signature", STRIPE_HEADER)]);
    let spec = stripe(&["whsec_other"]);
    let result = spec.check(&h, STRIPE_BODY.as_bytes(), STRIPE_T);
    assert_eq!(result, Err(VerifyError::Mismatch));

    let h = standard_headers(STANDARD_ID_VALUE, "1700000000", STANDARD_SIG);
    let spec = standard(&[STANDARD_SECOND_SECRET]);
    let result = spec.check(&h, STANDARD_BODY.as_bytes(), STANDARD_T);
    assert_eq!(result, Err(VerifyError::Mismatch));
}

#[test]
fn stale_timestamps_are_refused_in_both_directions() {
    let h = headers(&[("stripe-signature", STRIPE_HEADER)]);
    let spec = stripe(&[STRIPE_SECRET]);
    let body = STRIPE_BODY.as_bytes();
    assert_eq!(spec.check(&h, body, STRIPE_T + 300), Ok(()));
    assert_eq!(spec.check(&h, body, STRIPE_T - 300), Ok(()));
    let old = spec.check(&h, body, STRIPE_T + 412);
    assert_eq!(
        old,
        Err(VerifyError::Stale {
            timestamp: STRIPE_T,
            age_secs: 412,
            tolerance_secs: 300
        })
    );
    assert_eq!(
        old.expect_err("refused").to_string(),
        "timestamp 1700000000 is 412 s in the past; tolerance is 300 s"
    );
    let future = spec.check(&h, body, STRIPE_T - 301);
    assert_eq!(
        future.expect_err("refused").to_string(),
        "timestamp 1700000000 is 301 s in the future; tolerance is 300 s"
    );

    let h = standard_headers(STANDARD_ID_VALUE, "1700000000", STANDARD_SIG);
    let spec = standard(&[STANDARD_SECRET]);
    let body = STANDARD_BODY.as_bytes();
    assert!(matches!(
        spec.check(&h, body, STANDARD_T + 301),
        Err(VerifyError::Stale { age_secs: 301, .. })
    ));
    assert!(matches!(
        spec.check(&h, body, STANDARD_T - 301),
        Err(VerifyError::Stale { age_secs: -301, .. })
    ));

    let h = slack_headers("1531420618", SLACK_SIGNATURE_VALUE);
    let body = SLACK_BODY.as_bytes();
    assert!(matches!(
        slack().check(&h, body, SLACK_T + 301),
        Err(VerifyError::Stale { .. })
    ));
    assert!(matches!(
        slack().check(&h, body, SLACK_T - 301),
        Err(VerifyError::Stale { .. })
    ));
}

#[test]
fn extreme_timestamps_do_not_overflow() {
    // A correctly signed t=i64::MAX seen at now=i64::MIN: the distance saturates.
    let t = i64::MAX.to_string();
    let sig = mac(STRIPE_SECRET.as_bytes(), &[t.as_bytes(), b".", b"{}"]);
    let value = format!("t={t},v1={}", to_hex(&sig));
    let h = headers(&[("stripe-signature", &value)]);
    let result = stripe(&[STRIPE_SECRET]).check(&h, b"{}", i64::MIN);
    assert_eq!(
        result,
        Err(VerifyError::Stale {
            timestamp: i64::MAX,
            age_secs: i64::MIN,
            tolerance_secs: 300
        })
    );
    assert!(
        result
            .expect_err("refused")
            .to_string()
            .contains("in the future")
    );
    // One past i64::MAX is not a timestamp at all.
    let h = headers(&[("stripe-signature", "t=9223372036854775808,v1=00")]);
    let msg = malformed_msg(stripe(&[STRIPE_SECRET]).check(&h, b"{}", 0));
    assert_eq!(
        msg,
        "Stripe-Signature has a t= that is not a unix timestamp in seconds"
    );
}

#[test]
fn missing_headers_are_named() {
    let body = b"{}";
    assert_eq!(
        github().check(&vec![], body, 0),
        Err(VerifyError::MissingHeader("X-Hub-Signature-256".into()))
    );
    assert_eq!(
        github()
            .check(&vec![], body, 0)
            .expect_err("refused")
            .to_string(),
        "missing X-Hub-Signature-256 header"
    );
    assert_eq!(
        stripe(&[STRIPE_SECRET]).check(&vec![], body, 0),
        Err(VerifyError::MissingHeader("Stripe-Signature".into()))
    );
    let no_id = headers(&[
        ("webhook-timestamp", "1700000000"),
        ("webhook-signature", STANDARD_SIG),
    ]);
    assert_eq!(
        standard(&[STANDARD_SECRET]).check(&no_id, body, STANDARD_T),
        Err(VerifyError::MissingHeader("webhook-id".into()))
    );
    let no_ts = headers(&[("x-slack-signature", SLACK_SIGNATURE_VALUE)]);
    assert_eq!(
        slack().check(&no_ts, body, SLACK_T),
        Err(VerifyError::MissingHeader(
            "X-Slack-Request-Timestamp".into()
        ))
    );
    assert_eq!(
        generic(Encoding::Hex, "").check(&vec![], body, 0),
        Err(VerifyError::MissingHeader("X-Shopify-Hmac-Sha256".into()))
    );
}

#[test]
fn malformed_headers_say_what_is_wrong() {
    let gh =
        |v: &str| malformed_msg(github().check(&headers(&[("x-hub-signature-256", v)]), b"", 0));
    assert_eq!(gh(""), "X-Hub-Signature-256 does not start with sha256=");
    assert_eq!(
        gh("sha1=757107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"),
        "X-Hub-Signature-256 does not start with sha256="
    );
    assert_eq!(
        gh("sha256=757107"),
        "X-Hub-Signature-256 is not sha256= followed by 64 hex digits"
    );
    assert_eq!(
        gh("sha256=zz7107ea0eb2509fc211221cce984b8a37570b6d7586c22c46f4379c8b043e17"),
        "X-Hub-Signature-256 is not sha256= followed by 64 hex digits"
    );
    let non_ascii: Headers = vec![(
        "x-hub-signature-256".into(),
        Bytes::from_static(b"sha256=\xff\xfe"),
    )];
    assert_eq!(
        malformed_msg(github().check(&non_ascii, b"", 0)),
        "X-Hub-Signature-256 is not ASCII"
    );

    let st = |v: &str| {
        malformed_msg(stripe(&[STRIPE_SECRET]).check(&headers(&[("stripe-signature", v)]), b"", 0))
    };
    assert_eq!(st("t=1700000000"), "Stripe-Signature has no v1 signature");
    assert_eq!(
        st("t=1700000000,v0=abc"),
        "Stripe-Signature has no v1 signature"
    );
    assert_eq!(
        st("t=1700000000,v1=abc"),
        "Stripe-Signature has no v1 signature of 64 hex digits"
    );
    assert_eq!(st("v1=abc,garbage"), "Stripe-Signature has no t= timestamp");
    assert_eq!(
        st("t=1,t=2,v1=00"),
        "Stripe-Signature has more than one t= timestamp"
    );
    for bad_t in ["t=", "t=abc", "t=-5", "t=+5", "t=1.5", "t=1e9"] {
        assert_eq!(
            st(&format!("{bad_t},{}", &STRIPE_HEADER[13..])),
            "Stripe-Signature has a t= that is not a unix timestamp in seconds",
            "{bad_t}"
        );
    }

    let sw = |t: &str, sig: &str| {
        let h = standard_headers(STANDARD_ID_VALUE, t, sig);
        malformed_msg(standard(&[STANDARD_SECRET]).check(&h, b"", 0))
    };
    assert_eq!(
        sw("soon", STANDARD_SIG),
        "webhook-timestamp is not a unix timestamp in seconds"
    );
    assert_eq!(
        sw("1700000000", "v1a,abc v2,def"),
        "webhook-signature has no v1 signature"
    );
    assert_eq!(
        sw("1700000000", "v1,not-base64"),
        "webhook-signature has no v1 signature of 44 base64 characters"
    );

    let sl = |t: &str, sig: &str| malformed_msg(slack().check(&slack_headers(t, sig), b"", 0));
    assert_eq!(
        sl("1531420618", &SLACK_SIGNATURE_VALUE[3..]),
        "X-Slack-Signature does not start with v0="
    );
    assert_eq!(
        sl("1531420618", "v0=12"),
        "X-Slack-Signature is not v0= followed by 64 hex digits"
    );
    assert_eq!(
        sl("", SLACK_SIGNATURE_VALUE),
        "X-Slack-Request-Timestamp is not a unix timestamp in seconds"
    );
}

#[test]
fn duplicate_signature_headers_are_refused() {
    let h = headers(&[
        ("x-hub-signature-256", GITHUB_SIGNATURE_VALUE),
        ("X-Hub-Signature-256", "sha256=00"),
    ]);
    assert_eq!(
        malformed_msg(github().check(&h, GITHUB_BODY.as_bytes(), 0)),
        "X-Hub-Signature-256 appears more than once"
    );
}

#[test]
fn header_names_are_case_insensitive() {
    let h = headers(&[("X-HUB-SIGNATURE-256", GITHUB_SIGNATURE_VALUE)]);
    assert_eq!(github().check(&h, GITHUB_BODY.as_bytes(), 0), Ok(()));
    let h = headers(&[("Stripe-Signature", STRIPE_HEADER)]);
    let spec = stripe(&[STRIPE_SECRET]);
    assert_eq!(spec.check(&h, STRIPE_BODY.as_bytes(), STRIPE_T), Ok(()));
    let h = headers(&[
        ("Webhook-Id", STANDARD_ID_VALUE),
        ("WEBHOOK-TIMESTAMP", "1700000000"),
        ("Webhook-Signature", STANDARD_SIG),
    ]);
    let spec = standard(&[STANDARD_SECRET]);
    assert_eq!(spec.check(&h, STANDARD_BODY.as_bytes(), STANDARD_T), Ok(()));
}

#[test]
fn stripe_accepts_any_secret_and_any_v1_entry() {
    let body = STRIPE_BODY.as_bytes();
    // Rotation: the second configured secret signed it.
    let h = headers(&[("stripe-signature", STRIPE_HEADER)]);
    let spec = stripe(&["whsec_old", STRIPE_SECRET]);
    assert_eq!(spec.check(&h, body, STRIPE_T), Ok(()));
    // Several v1 entries (Stripe sends one per active secret while one is rolled), plus a v0
    // and an unknown scheme, which are ignored.
    let value = format!(
        "t=1700000000,v1={STRIPE_ROTATED_V1},v0=abc,v9=x,{}",
        &STRIPE_HEADER[13..]
    );
    let h = headers(&[("stripe-signature", &value)]);
    assert_eq!(stripe(&[STRIPE_SECRET]).check(&h, body, STRIPE_T), Ok(()));
    assert_eq!(
        stripe(&[STRIPE_ROTATED_SECRET]).check(&h, body, STRIPE_T),
        Ok(())
    );
    assert_eq!(
        stripe(&["whsec_neither"]).check(&h, body, STRIPE_T),
        Err(VerifyError::Mismatch)
    );
}

#[test]
fn standard_accepts_any_secret_and_any_v1_entry() {
    let body = STANDARD_BODY.as_bytes();
    let h = standard_headers(STANDARD_ID_VALUE, "1700000000", STANDARD_SECOND_SIG);
    let spec = standard(&[STANDARD_SECRET, STANDARD_SECOND_SECRET]);
    assert_eq!(spec.check(&h, body, STANDARD_T), Ok(()));
    let several = format!("v1a,c2lnbmF0dXJl v1,bad {STANDARD_SECOND_SIG}  {STANDARD_SIG}");
    let h = standard_headers(STANDARD_ID_VALUE, "1700000000", &several);
    assert_eq!(
        standard(&[STANDARD_SECRET]).check(&h, body, STANDARD_T),
        Ok(())
    );
    // The id is signed too.
    let h = standard_headers("msg_other", "1700000000", STANDARD_SIG);
    assert_eq!(
        standard(&[STANDARD_SECRET]).check(&h, body, STANDARD_T),
        Err(VerifyError::Mismatch)
    );
}

#[test]
fn messages_never_contain_secrets_or_expected_signatures() {
    let h = headers(&[("x-hub-signature-256", "sha256=00")]);
    let err = github()
        .check(&h, b"x", 0)
        .expect_err("refused")
        .to_string();
    let expected = to_hex(&mac(GITHUB_SECRET.as_bytes(), &[b"x"]));
    assert!(
        !err.contains(GITHUB_SECRET) && !err.contains(&expected),
        "{err}"
    );
    let wrong = headers(&[("x-hub-signature-256", &format!("sha256={}", "0".repeat(64)))]);
    let err = github()
        .check(&wrong, b"x", 0)
        .expect_err("refused")
        .to_string();
    assert_eq!(err, "signature does not match");
}

// --- specs ---

#[test]
fn json_specs_use_kind_tags_and_provider_defaults() {
    let spec: Verify = serde_json::from_str(r#"{"kind":"stripe","secrets":["whsec_a","whsec_b"]}"#)
        .expect("parses");
    assert_eq!(spec, stripe(&["whsec_a", "whsec_b"]));
    let spec: Verify =
        serde_json::from_str(r#"{"kind":"hmac-sha256","secret":"s","header":"X-Sig"}"#)
            .expect("parses");
    assert_eq!(spec.kind(), "hmac-sha256");
    let json = serde_json::to_value(&spec).expect("serialises");
    assert_eq!(
        json,
        serde_json::json!({"kind":"hmac-sha256","secret":"s","header":"X-Sig","encoding":"hex","prefix":""})
    );
    assert_eq!(
        serde_json::from_value::<Verify>(json).expect("round trip"),
        spec
    );
    for bad in [
        r#"{"kind":"github","secret":"s","tolerance_secs":5}"#,
        r#"{"kind":"gitlab","secret":"s"}"#,
        r#"{"secret":"s"}"#,
    ] {
        assert!(serde_json::from_str::<Verify>(bad).is_err(), "{bad}");
    }
}

#[test]
fn debug_never_shows_secrets() {
    let shown = format!(
        "{:?} {:?} {:?}",
        github(),
        stripe(&[STRIPE_SECRET]),
        generic(Encoding::Hex, "p")
    );
    assert!(!shown.contains(GITHUB_SECRET) && !shown.contains(STRIPE_SECRET));
    assert!(!shown.contains(GENERIC_SECRET), "{shown}");
    let args = VerifyArgs {
        secrets: vec!["hunter2".into()],
        ..VerifyArgs::default()
    };
    assert!(!format!("{args:?}").contains("hunter2"));
}

#[test]
fn validate_refuses_unusable_specs() {
    let err = |spec: Verify| spec.validate().expect_err("refused").to_string();
    assert_eq!(err(stripe(&[])), "stripe needs at least one secret");
    assert_eq!(err(stripe(&["whsec_a", ""])), "secret 2 is empty");
    assert_eq!(
        err(Verify::Github {
            secret: String::new()
        }),
        "secret 1 is empty"
    );
    for bad in [
        "MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
        "whsec_",
        "whsec_not base64!",
    ] {
        assert_eq!(
            err(standard(&[STANDARD_SECRET, bad])),
            "secret 2 is not a Standard Webhooks secret: expected whsec_ followed by base64"
        );
    }
    assert_eq!(
        err(Verify::Slack {
            secret: "s".into(),
            tolerance_secs: 0
        }),
        "tolerance must be at least 1 s"
    );
    let mut spec = generic(Encoding::Hex, "");
    if let Verify::HmacSha256 { header, .. } = &mut spec {
        *header = "X Sig".into();
    }
    assert_eq!(
        err(spec),
        "signature header \"X Sig\" is not a valid HTTP header name"
    );
    assert_eq!(
        err(generic(Encoding::Hex, "é")),
        "signature prefix must be ASCII"
    );
    for ok in [
        github(),
        stripe(&[STRIPE_SECRET, STRIPE_ROTATED_SECRET]),
        standard(&[STANDARD_SECRET, STANDARD_SECOND_SECRET]),
        slack(),
        generic(Encoding::Base64, "sha256="),
    ] {
        assert_eq!(ok.validate(), Ok(()), "{ok:?}");
    }
}

#[derive(Debug, Parser)]
struct Cli {
    #[command(flatten)]
    verify: VerifyArgs,
}

fn build(args: &[&str]) -> Result<Option<Verify>, String> {
    let cli = Cli::try_parse_from(std::iter::once("channels-create").chain(args.iter().copied()))
        .map_err(|e| e.to_string())?;
    cli.verify.build().map_err(|e| e.to_string())
}

#[test]
fn flags_build_specs() {
    assert_eq!(build(&[]), Ok(None));
    assert_eq!(
        build(&["--verify", "github", "--secret", GITHUB_SECRET]),
        Ok(Some(github()))
    );
    assert_eq!(
        build(&[
            "--verify",
            "stripe",
            "--secret",
            "whsec_a",
            "--secret",
            "whsec_b",
            "--tolerance",
            "10m"
        ]),
        Ok(Some(Verify::Stripe {
            secrets: vec!["whsec_a".into(), "whsec_b".into()],
            tolerance_secs: 600
        }))
    );
    assert_eq!(
        build(&["--verify", "slack", "--secret", SLACK_SECRET]),
        Ok(Some(slack()))
    );
    assert_eq!(
        build(&[
            "--verify",
            "hmac-sha256",
            "--secret",
            GENERIC_SECRET,
            "--signature-header",
            "X-Shopify-Hmac-Sha256",
            "--signature-encoding",
            "base64",
        ]),
        Ok(Some(generic(Encoding::Base64, "")))
    );
}

#[test]
fn flag_mistakes_are_named() {
    let cases: &[(&[&str], &str)] = &[
        (&["--verify", "github"], "--verify github needs --secret"),
        (&["--secret", "s"], "--secret given without --verify"),
        (&["--tolerance", "5m"], "--tolerance given without --verify"),
        (
            &["--verify", "github", "--secret", "a", "--secret", "b"],
            "--verify github takes one --secret",
        ),
        (
            &["--verify", "slack", "--secret", "a", "--secret", "b"],
            "--verify slack takes one --secret",
        ),
        (
            &[
                "--verify",
                "github",
                "--secret",
                "a",
                "--signature-header",
                "X-Sig",
            ],
            "--signature-header only applies to --verify hmac-sha256",
        ),
        (
            &[
                "--verify",
                "stripe",
                "--secret",
                "a",
                "--signature-prefix",
                "v1=",
            ],
            "--signature-prefix only applies to --verify hmac-sha256",
        ),
        (
            &["--verify", "github", "--secret", "a", "--tolerance", "5m"],
            "--tolerance only applies to --verify stripe, standard or slack",
        ),
        (
            &[
                "--verify",
                "stripe",
                "--secret",
                "a",
                "--tolerance",
                "1500ms",
            ],
            "--tolerance must be a whole number of seconds",
        ),
        (
            &["--verify", "stripe", "--secret", "a", "--tolerance", "0s"],
            "tolerance must be at least 1 s",
        ),
        (
            &["--verify", "hmac-sha256", "--secret", "a"],
            "--verify hmac-sha256 needs --signature-header",
        ),
        (&["--verify", "github", "--secret", ""], "secret 1 is empty"),
        (
            &["--verify", "standard", "--secret", "plain"],
            "secret 1 is not a Standard Webhooks secret: expected whsec_ followed by base64",
        ),
    ];
    for (args, expected) in cases {
        assert_eq!(build(args).expect_err("refused"), *expected, "{args:?}");
    }
    assert!(build(&["--verify", "gitlab"]).is_err());
}

// --- hostile input ---

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every scheme, with secrets the generated input does not know.
fn all_specs() -> Vec<Verify> {
    vec![
        github(),
        stripe(&[STRIPE_SECRET, STRIPE_ROTATED_SECRET]),
        standard(&[STANDARD_SECRET, STANDARD_SECOND_SECRET]),
        slack(),
        generic(Encoding::Hex, ""),
        generic(Encoding::Base64, "sha256="),
    ]
}

/// Correct headers for `spec` (first secret) over `body` at time `t`.
fn sign(spec: &Verify, body: &[u8], t: i64) -> Headers {
    let ts = t.to_string();
    match spec {
        Verify::Github { secret } => headers(&[(
            "x-hub-signature-256",
            &format!("sha256={}", to_hex(&mac(secret.as_bytes(), &[body]))),
        )]),
        Verify::Stripe { secrets, .. } => {
            let sig = mac(secrets[0].as_bytes(), &[ts.as_bytes(), b".", body]);
            headers(&[("stripe-signature", &format!("t={ts},v1={}", to_hex(&sig)))])
        }
        Verify::Standard { secrets, .. } => {
            let key = standard_key(&secrets[0]).expect("valid test secret");
            let sig = mac(&key, &[b"msg_1.", ts.as_bytes(), b".", body]);
            standard_headers("msg_1", &ts, &format!("v1,{}", BASE64.encode(sig)))
        }
        Verify::Slack { secret, .. } => {
            let sig = mac(secret.as_bytes(), &[b"v0:", ts.as_bytes(), b":", body]);
            slack_headers(&ts, &format!("v0={}", to_hex(&sig)))
        }
        Verify::HmacSha256 {
            secret,
            header,
            encoding,
            prefix,
        } => {
            let sig = mac(secret.as_bytes(), &[body]);
            let encoded = match encoding {
                Encoding::Hex => to_hex(&sig),
                Encoding::Base64 => BASE64.encode(sig),
            };
            headers(&[(header, &format!("{prefix}{encoded}"))])
        }
    }
}

fn arb_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec![
            "x-hub-signature-256",
            "X-Hub-Signature-256",
            "stripe-signature",
            "webhook-id",
            "webhook-timestamp",
            "webhook-signature",
            "x-slack-signature",
            "x-slack-request-timestamp",
            "x-shopify-hmac-sha256",
        ])
        .prop_map(String::from),
        "[a-z-]{1,20}",
    ]
}

fn arb_value() -> impl Strategy<Value = Bytes> {
    let hex64 = "[0-9a-fA-F]{64}";
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        "[tv01=,. a-fA-F0-9+/_-]{0,200}".prop_map(String::into_bytes),
        (any::<i64>(), hex64, hex64)
            .prop_map(|(t, a, b)| format!("t={t},v1={a},v1={b}").into_bytes()),
        hex64.prop_map(|h| format!("sha256={h}").into_bytes()),
        hex64.prop_map(|h| format!("v0={h}").into_bytes()),
        hex64.prop_map(String::into_bytes),
        prop::collection::vec(any::<u8>(), 32).prop_map(|d| format!(
            "v1,{} v1,{}",
            BASE64.encode(&d),
            BASE64.encode(&d[..31])
        )
        .into_bytes()),
        any::<i64>().prop_map(|t| t.to_string().into_bytes()),
        Just(vec![b'='; 4096]),
    ]
    .prop_map(Bytes::from)
}

fn arb_now() -> impl Strategy<Value = i64> {
    prop_oneof![
        any::<i64>(),
        Just(i64::MIN),
        Just(i64::MAX),
        0i64..4_000_000_000,
    ]
}

proptest! {
    #[test]
    fn hostile_headers_never_panic_nor_pass(
        h in prop::collection::vec((arb_name(), arb_value()), 0..10),
        body in prop::collection::vec(any::<u8>(), 0..256),
        now in arb_now(),
    ) {
        for spec in all_specs() {
            prop_assert!(spec.check(&h, &body, now).is_err(), "{:?} accepted {:?}", spec, h);
        }
    }

    #[test]
    fn signed_bodies_pass_and_any_changed_byte_fails(
        body in prop::collection::vec(any::<u8>(), 1..256),
        t in 0i64..4_000_000_000,
        skew in -300i64..=300,
        at in any::<prop::sample::Index>(),
        flip in 1u8..=255,
    ) {
        for spec in all_specs() {
            let h = sign(&spec, &body, t);
            prop_assert_eq!(spec.check(&h, &body, t + skew), Ok(()), "{:?}", spec);
            let mut tampered = body.clone();
            tampered[at.index(body.len())] ^= flip;
            prop_assert_eq!(spec.check(&h, &tampered, t + skew), Err(VerifyError::Mismatch));
        }
    }
}
