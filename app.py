"""Hugging Face Spaces entry point: exactly ``p2p serve`` (same start-up, same settings).

It listens on GRADIO_SERVER_NAME / GRADIO_SERVER_PORT (or PORT), default 0.0.0.0:7860, and reads the usual
P2P_* variables: P2P_CONFIG (a config file; a study pack's config.toml serves it in presenter mode, with no
model and no torch), P2P_ADMIN_PASSWORD (a Space secret, opens /admin), P2P_DATA_DIR / P2P_DATABASE_URL.
With the Space's persistent storage enabled, data goes to /data/p2p_data by default.
"""

import os
import sys

from p2p_app.cli import main

if __name__ == "__main__":
    os.environ.setdefault("GRADIO_SERVER_NAME", "0.0.0.0")
    args = ["serve"]
    if os.environ.get("P2P_CONFIG"):
        args += ["--config", os.environ["P2P_CONFIG"]]
    sys.exit(main(args + sys.argv[1:], prog_name="app.py"))
