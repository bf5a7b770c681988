//! Serve a fake upstream on `127.0.0.1:0` (or the address given as the first argument), print
//! its URL, and run until Ctrl-C. For the SDK check (`tests/sdk_check.py`) without building the
//! whole `faregate` binary.

use faregate_fake_upstream::{FakeConfig, serve_on};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let listen = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.1:0".to_string());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    println!("http://{}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    let on_signal = shutdown.clone();
    tokio::spawn(async move {
        let _ = tokio::signal::ctrl_c().await;
        on_signal.cancel();
    });
    serve_on(listener, FakeConfig { listen, ..FakeConfig::default() }, shutdown).await
}
