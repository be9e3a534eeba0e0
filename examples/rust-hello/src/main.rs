//! An example function for Fn's http-stream contract, written with fnrs-fdk.
//!
//! Input: optional JSON `{"name": "…", "status": 404}`. Output: JSON
//! `{"message": "Hello <name>", "call_id", "fn_id", "app_id"}` with header
//! `X-Custom: yes`; `"name": "boom"` fails the call; `"status"` sets the status
//! an HTTP-trigger client sees (with `Location: /elsewhere`).

use fnrs_fdk::{Context, Incoming, Response};

async fn handle(ctx: Context, body: Incoming) -> Result<Response, fnrs_fdk::BoxError> {
    let input = fnrs_fdk::read_body(body).await?;
    let json: serde_json::Value = serde_json::from_slice(&input).unwrap_or_default();
    let name = json["name"].as_str().unwrap_or("World").to_owned();
    if name == "boom" {
        return Err("user asked for boom".into());
    }
    eprintln!("{} - hello from rust-hello", ctx.call_id());
    let reply = serde_json::json!({
        "message": format!("Hello {name}"),
        "call_id": ctx.call_id(),
        "fn_id": ctx.fn_id(),
        "app_id": ctx.app_id(),
    });
    let mut resp = Response::bytes(reply.to_string())
        .header("content-type", "application/json")
        .header("x-custom", "yes");
    if let Some(status) = json["status"].as_u64() {
        resp = resp.status(status as u16).header("location", "/elsewhere");
    }
    Ok(resp)
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    if let Err(e) = fnrs_fdk::run(handle).await {
        eprintln!("rust-hello: {e}");
        std::process::exit(1);
    }
}
