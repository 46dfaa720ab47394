//! An empty wasi:http handler: what any spin-sdk 5.2 component costs per request (instantiation, the handler call,
//! one small response), measured beside Pier's by `scripts/bench wasi-startup`.

use spin_sdk::http::{Request, Response};

#[spin_sdk::http_component]
fn handle(_req: Request) -> Response {
    Response::builder().status(200).header("content-type", "application/json").body("{}").build()
}
