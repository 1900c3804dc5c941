//! `relay-client events` and `relay-client replay` refusing what they cannot do, before they
//! ask any server. (The commands against a real server are in e2e's `client_history`.)

use crate::common::*;

#[tokio::test]
async fn events_and_replay_need_a_channel() {
    let id = "5f0c1a2b-0000-4000-8000-000000000001";
    for (args, command) in [
        (&["events"][..], "events"),
        (&["replay", id, "--forward", "http://127.0.0.1:9"], "replay"),
    ] {
        let mut args = args.to_vec();
        args.extend(["--server", "http://127.0.0.1:9"]);
        let run = run_client(&args).await;
        assert!(!run.success, "{run:?}");
        assert_eq!(
            run.stderr,
            format!(
                "error: `relay-client {command}` needs --channel NAME or the channel's --token TOKEN, which names it (or set HOOKRELAY_CHANNEL or HOOKRELAY_TOKEN)\n"
            )
        );
    }
}

#[tokio::test]
async fn replay_help_says_a_local_replay_is_not_recorded() {
    let run = run_client(&["replay", "--help"]).await;
    assert!(run.success, "{run:?}");
    let help = run.stdout.split_whitespace().collect::<Vec<_>>().join(" ");
    assert!(
        help.contains("that local replay is not recorded on the server"),
        "{help}"
    );
    assert!(help.contains("(not recorded on the server)"), "{help}");
}

#[tokio::test]
async fn the_agent_still_needs_forward() {
    let run = run_client(&["--server", "http://127.0.0.1:9", "--channel", "c"]).await;
    assert!(!run.success, "{run:?}");
    assert!(
        run.stderr
            .contains("--forward is required to run the agent"),
        "{}",
        run.stderr
    );
}

#[tokio::test]
async fn bad_events_and_routes_stop_the_agent_at_start_saying_why() {
    for (args, says) in [
        (&["--route", "push"][..], "--route \"push\" has no URL"),
        (
            &["--route", "=http://x"],
            "--route \"=http://x\" has no event type",
        ),
        (
            &["--route", "push=ftp://x"],
            "--route \"push=ftp://x\": the URL must be",
        ),
        (
            &["--forward", "http://127.0.0.1:9", "--events", "push,a*b"],
            "--events \"a*b\": `*` may only end a pattern",
        ),
    ] {
        let server = ["--server", "http://127.0.0.1:9"];
        let run = run_client(&[&server[..], args].concat()).await;
        assert!(!run.success, "{args:?}: {run:?}");
        assert!(run.stderr.contains(says), "{args:?}: {}", run.stderr);
    }
}
