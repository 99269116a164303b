//! The prebuilt auto-stop JupyterLab extension (notebook-runtime/jupyterlab-extension),
//! embedded so the gateway can install it into every notebook's JupyterLab. Generated
//! by notebook-runtime/jupyterlab-extension/build.sh; do not edit.

/// Its name, the directory under `labextensions/` it is installed in.
pub const NAME: &str = "@atelier/auto-stop";

/// (path inside the extension's directory, contents)
pub const FILES: &[(&str, &[u8])] = &[
    (
        "package.json",
        include_bytes!("../../../notebook-runtime/jupyterlab-extension/labextension/package.json"),
    ),
    (
        "static/509.1886784c24f37e43bd47.js",
        include_bytes!(
            "../../../notebook-runtime/jupyterlab-extension/labextension/static/509.1886784c24f37e43bd47.js"
        ),
    ),
    (
        "static/remoteEntry.46dd826a21d8adca3ae2.js",
        include_bytes!(
            "../../../notebook-runtime/jupyterlab-extension/labextension/static/remoteEntry.46dd826a21d8adca3ae2.js"
        ),
    ),
    (
        "static/style.js",
        include_bytes!(
            "../../../notebook-runtime/jupyterlab-extension/labextension/static/style.js"
        ),
    ),
    (
        "static/third-party-licenses.json",
        include_bytes!(
            "../../../notebook-runtime/jupyterlab-extension/labextension/static/third-party-licenses.json"
        ),
    ),
];
