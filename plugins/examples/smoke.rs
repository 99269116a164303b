use std::sync::Arc;
use atelier_plugins::*;
use atelier_plugins::bindings::inference::atelier::plugin::inference_types as inf;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let path = std::env::args().nth(1).unwrap();
    let model = std::env::args().nth(2);
    let host = Host::new("/tmp/plugsmoke", HostSettings::default())?;
    let bytes = std::fs::read(&path)?;
    let t = std::time::Instant::now();
    let h2 = host.clone();
    let reg = tokio::task::spawn_blocking(move || h2.register(&bytes, None)).await?;
    println!("register: {:?} in {:?}", reg.as_ref().map(|r| (&r.digest, r.world, r.compiled, r.compile_ms)), t.elapsed());
    let reg = reg?;
    println!("imports: {:?}", reg.imports);
    let limits = host.settings().resolve(reg.world, &LimitsSpec::default()).unwrap();
    let plugin = PluginRef { key: "demo@1".into(), digest: reg.digest.clone(), world: reg.world, limits, model_dir: model.map(Into::into) };
    let input: serde_json::Value = serde_json::json!({"body": {"instances": [[1.0, 2.0], [3.0, 4.0]], "top_k": 2},
        "model_output": {"tensors": [{"name": "logits", "dtype": "f32", "shape": [2, 4], "values": [1, 2, 3, 4, 4, 3, 2, 1]}]}});
    for _ in 0..3 {
        let r = host.invoke(&plugin, CallContext { tenant: "t".into(), ..Default::default() }, &input).await;
        println!("{}", serde_json::to_string(&r)?);
    }
    let _ = Arc::strong_count(&host);
    Ok(())
}
