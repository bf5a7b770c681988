//! `faregate fake-upstream`: a fake LLM provider (Anthropic and OpenAI routes) with
//! deterministic usage, for trying the gateway without a real provider. Prints its URL, then
//! serves until Ctrl-C or SIGTERM.

use std::time::Duration;

use anyhow::Context as _;
use faregate_core::shutdown::Tasks;
use faregate_fake_upstream::FakeConfig;

pub async fn fake_upstream(listen: String, stream_delay_ms: u64) -> anyhow::Result<()> {
    let listener =
        tokio::net::TcpListener::bind(&listen).await.with_context(|| format!("binding {listen}"))?;
    println!("http://{}", listener.local_addr()?);
    let tasks = Tasks::default();
    tasks.cancel_on_signals();
    let config =
        FakeConfig { listen, stream_delay: Duration::from_millis(stream_delay_ms), ..FakeConfig::default() };
    let token = tasks.token().clone();
    tasks.spawn("fake-upstream", async move {
        Ok(faregate_fake_upstream::serve_on(listener, config, token).await?)
    });
    tasks.drain(Duration::from_secs(30)).await.map_err(anyhow::Error::msg)
}
