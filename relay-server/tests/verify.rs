//! Signature checks at the edge, as the admin API takes them. (Signed webhooks checked on
//! their way to an agent are in e2e's `verify`.)

use crate::common::*;
use serde_json::json;

#[tokio::test]
async fn a_bad_verify_spec_is_refused_when_the_channel_is_created() {
    let server = start_server(closed()).await;
    for bad in [
        json!({"kind": "github"}),
        json!({"kind": "github", "secret": ""}),
        json!({"kind": "standard", "secrets": ["not-whsec"]}),
        json!({"kind": "sha1", "secret": "x"}),
    ] {
        let body = json!({"name": "v", "verify": bad}).to_string();
        let answer = admin(&server, "POST", "/api/admin/channels", body).await;
        assert_eq!(answer.status, 400, "{bad}: {:?}", answer.body);
    }
}
