//! The `relay-client` binary as a developer runs it, where no relay-server is needed: a
//! refusal by what stands in front of the relay. (The binary against a real server is in
//! e2e's `client_cli`.)

use std::io::{Read, Write};
use std::net::TcpListener as StdListener;

use crate::common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http_refusal_before_the_upgrade_shows_the_servers_reason() {
    // What stands in front of the relay may refuse the upgrade itself (a reverse proxy in
    // maintenance, the relay's own 403 without a client certificate): here, a proxy answering
    // every request with 503 and a JSON reason.
    let proxy = StdListener::bind("127.0.0.1:0").expect("bind");
    let addr = proxy.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in proxy.incoming() {
            let Ok(mut stream) = stream else { break };
            let mut buf = [0u8; 4096];
            let _ = stream.read(&mut buf);
            let body = br#"{"error":"down for maintenance until 10:00"}"#;
            let head = format!(
                "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n\
                 content-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            // One write: the agent reads what arrived with the head, as from a real proxy
            // that sends a small answer in one segment.
            let _ = stream.write_all(&[head.as_bytes(), body].concat());
        }
    });
    let target = start_std_target();
    let (mut child, lines) = spawn_agent(addr, target, "behind", &[]);
    let refused = line_matching(&lines, |l| l.contains("refused the connection"));
    let prefix = format!(
        "The relay at http://{addr} refused the connection with 503 Service Unavailable: down for maintenance until 10:00; retrying in "
    );
    assert!(refused.starts_with(&prefix), "{refused}");
    interrupt(&mut child);
}
