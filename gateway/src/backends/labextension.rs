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
        "static/509.76c62aeffcec8386d2a5.js",
        include_bytes!(
            "../../../notebook-runtime/jupyterlab-extension/labextension/static/509.76c62aeffcec8386d2a5.js"
        ),
    ),
    (
        "static/remoteEntry.c2ad724bc62d8c4ca4a7.js",
        include_bytes!(
            "../../../notebook-runtime/jupyterlab-extension/labextension/static/remoteEntry.c2ad724bc62d8c4ca4a7.js"
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
