//! The empty Rust Worker `scripts/bench workers` compares Pier with (see Cargo.toml): the same answer as the empty
//! JS Worker (a small JSON body), built by the same toolchain as Pier.

use worker::{event, web_sys, Context, Env};

#[event(fetch)]
async fn fetch(_req: web_sys::Request, _env: Env, _ctx: Context) -> worker::Result<web_sys::Response> {
    let init = web_sys::ResponseInit::new();
    init.set_status(200);
    let headers = web_sys::Headers::new()?;
    headers.append("content-type", "application/json")?;
    init.set_headers(&headers);
    Ok(web_sys::Response::new_with_opt_str_and_init(Some("{}"), &init)?)
}
