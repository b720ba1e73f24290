//! Host bindings generated from `guest-sdk/wit/render.wit`.

wasmtime::component::bindgen!({
    path: "../guest-sdk/wit",
    world: "render-job",
});
