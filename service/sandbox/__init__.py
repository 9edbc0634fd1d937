"""The Close sandbox: a real HTTP server that behaves like Close (per close-api.md) for
everything this service uses. `server.SandboxServer` runs it in a thread, `state.SandboxState`
is its world and its Python inspection API, `/_sandbox/*` (control_views) the same over HTTP."""
