"""The web app (Gradio): `lungcancer.app.server.serve`. Gradio is imported only when serving."""
