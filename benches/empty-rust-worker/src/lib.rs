//! The empty Rust Worker `scripts/bench workers` compares Pier with (see Cargo.toml): the same answer as the empty
//! JS Worker (a small JSON body), built by the same toolchain as Pier and exported the way Pier exports its `fetch`
//! (a plain, synchronous wasm-bindgen export that worker-build's shim calls), so its ratio is the floor of a Rust
//! Worker's own plumbing: the shim, the wasm call and building the `Response`.

use worker::wasm_bindgen::{self, prelude::wasm_bindgen, JsValue};
use worker::{web_sys, Env};

#[wasm_bindgen(js_name = fetch)]
pub fn fetch(_req: web_sys::Request, _env: Env, _ctx: worker::worker_sys::Context) -> Result<JsValue, JsValue> {
    let init = web_sys::ResponseInit::new();
    init.set_status(200);
    let headers = web_sys::Headers::new()?;
    headers.append("content-type", "application/json")?;
    init.set_headers(&headers);
    Ok(web_sys::Response::new_with_opt_str_and_init(Some("{}"), &init)?.into())
}
