"""Hugging Face Spaces entry point: the demo config (tiny CPU models) on port 7860.

Set P2P_ADMIN_PASSWORD as a Space secret to open /admin. To present real models without a GPU,
pre-generate a study elsewhere (`p2p study generate`) and ship its data folder (P2P_DATA_DIR).
"""

import os

from p2p_app.service import P2PApp
from p2p_app.ui import serve

if __name__ == "__main__":
    app = P2PApp.create(os.environ.get("P2P_CONFIG"))
    serve(app, host="0.0.0.0", port=int(os.environ.get("PORT", "7860")))
