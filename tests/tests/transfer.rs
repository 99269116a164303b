//! Large transfers through the `/nb/{id}/` proxy: bodies stream (the gateway's memory stays
//! far below the body size) and big WebSocket messages cross it both ways.

use std::time::Duration;

use atelier_tests::{Gateway, Kernel, proc_status_bytes, shorten};
use futures_util::StreamExt;
use reqwest::Method;

const MIB: u64 = 1024 * 1024;
const BODY: u64 = 256 * MIB;
/// The gateway's peak RSS must stay below this while it relays `BODY` bytes.
const RSS_LIMIT: u64 = 128 * MIB;
/// 20 MiB WebSocket payloads.
const WS_PAYLOAD: usize = 20 * 1024 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_bodies_stream_through_the_proxy() {
    let gw = Gateway::start().await;
    let alice = gw.create_user("alice").await;
    let id = gw.create_notebook(&alice, "bulk").await;
    gw.wait_status(&alice, &id, "RUNNING").await;
    let api = gw.api(&alice);
    let pid = gw.pid();
    let rss_before = proc_status_bytes(pid, "VmRSS");

    // Upload: a JSON body generated on the fly, 1 MiB at a time, with no length up front.
    let prefix = br#"{"type":"file","format":"text","content":""#.to_vec();
    let suffix = br#""}"#.to_vec();
    let chunk = vec![b'a'; MIB as usize];
    let pieces = std::iter::once(prefix)
        .chain((0..BODY / MIB).map(move |_| chunk.clone()))
        .chain(std::iter::once(suffix))
        .map(Ok::<Vec<u8>, std::io::Error>);
    let upload = api
        .request(Method::PUT, &format!("/nb/{id}/api/contents/big.txt"))
        .header("content-type", "application/json")
        .timeout(Duration::from_secs(300))
        .body(reqwest::Body::wrap_stream(futures_util::stream::iter(
            pieces,
        )));
    let r = api.send(upload).await;
    r.expect_status(201);
    assert_eq!(r.json["size"], BODY, "{}", shorten(&r.text));
    let on_disk = std::fs::metadata(gw.notebook_dir(&id).join("work/big.txt"))
        .map(|m| m.len())
        .unwrap_or_default();
    assert_eq!(on_disk, BODY, "the file in the work dir");
    let peak_upload = proc_status_bytes(pid, "VmHWM");

    // Download: read as a stream and count.
    let resp = api
        .request(Method::GET, &format!("/nb/{id}/files/big.txt"))
        .timeout(Duration::from_secs(300))
        .send()
        .await
        .expect("GET big.txt");
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let (mut received, mut foreign) = (0u64, 0u64);
    while let Some(chunk) = body.next().await {
        let chunk = chunk.expect("reading the download");
        received += chunk.len() as u64;
        foreign += chunk.iter().filter(|b| **b != b'a').count() as u64;
    }
    assert_eq!(received, BODY, "downloaded bytes");
    assert_eq!(foreign, 0, "the download is not the uploaded content");
    let peak = proc_status_bytes(pid, "VmHWM");
    let rss_after = proc_status_bytes(pid, "VmRSS");
    eprintln!(
        "gateway memory: RSS before {} MiB, after {} MiB; peak {} MiB after the upload, {} MiB \
         after the download",
        rss_before / MIB,
        rss_after / MIB,
        peak_upload / MIB,
        peak / MIB
    );
    assert!(
        peak < RSS_LIMIT,
        "the gateway's peak RSS reached {} MiB relaying {} MiB (limit {} MiB): bodies are \
         buffered, not streamed",
        peak / MIB,
        BODY / MIB,
        RSS_LIMIT / MIB
    );
}

/// 20 MiB messages cross the WebSocket relay from the client (a 20 MiB execute_request) and
/// to it (the echoed execute_input and a 20 MiB execute_result).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_messages_of_20_mib_cross_the_proxy() {
    let gw = Gateway::start().await;
    let alice = gw.create_user("alice").await;
    let id = gw.create_notebook(&alice, "big-messages").await;
    gw.wait_status(&alice, &id, "RUNNING").await;
    let mut kernel = Kernel::start(&gw.api(&alice), &id).await;

    let code = format!("x = \"{}\"\nprint(len(x))", "a".repeat(WS_PAYLOAD));
    assert!(code.len() > WS_PAYLOAD);
    assert_eq!(kernel.run(&code).await, format!("{WS_PAYLOAD}\n"));

    let e = kernel.execute(&format!("'b' * {WS_PAYLOAD}")).await;
    assert!(e.status == "ok" && e.error.is_none(), "{e:?}");
    let text = e
        .results
        .first()
        .and_then(|d| d["text/plain"].as_str())
        .unwrap_or_else(|| panic!("no execute_result: {}", shorten(&format!("{e:?}"))));
    assert_eq!(text.len(), WS_PAYLOAD + 2, "the repr of the string");
    assert!(text.starts_with("'bbb") && text.ends_with("bbb'"));
    // The kernel still answers after the big messages.
    assert_eq!(kernel.run("print(len(x) // 1024)").await, "20480\n");
}
