//! The README's quick start: open a database, write, read a view.
//!
//! `cargo run -p kappa-core --example quick_start -- ./my-db`

use kappa_core::view::kv::KvView;
use kappa_core::Kappa;
use serde_json::json;

#[async_std::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "./my-db".into());
    let core = Kappa::open(&dir)?;
    let kv = core.use_view("kv", 1, KvView::new)?;
    core.writer("local")?.append(&json!({"key": "monday", "value": "soup", "links": []}))?;
    kv.ready().await?;
    for head in kv.get("monday")? {
        let entry: serde_json::Value = head.json()?;
        println!("monday = {} ({})", entry["value"], head.id);
    }
    core.close()?;
    Ok(())
}
