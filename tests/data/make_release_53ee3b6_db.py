"""Build a database with release 53ee3b6 (schema before Alembic): live trials, a prepared study, study answers."""
# Run with release 53ee3b6 (git checkout 53ee3b6), whose API this script uses: python make_release_53ee3b6_db.py DATA_DIR
import sys
from pathlib import Path
from p2p_app.service import P2PApp
from p2p_app import reader

data = Path(sys.argv[1])
app = P2PApp.create(data_dir=data, load_models=True)
key = sorted(app.studies)[0]
st = app.studies[key]
reader.prepare_study(app, st, release_models=False)
s = app.sign_in("Fixture Arena Rater")
for i, prompt in enumerate(["a sessile polyp in the sigmoid colon", "ulcerative colitis, mild"]):
    t = app.live_generate(s, "colonoscopy", prompt)
    ans = {p.position: {"realism": 1 + (p.position + i) % 5, "alignment": 2, "comment": f"c{i}"} for p in t.panels}
    app.submit(s, t.trial_id, ans)
_, token = reader.add_rater(app, st, st.raters[0] if st.raters else "fixture_rater")
rs = reader.sign_in(app, st, token=token)
for j in range(3):
    t = reader.next_trial(app, st, rs)
    ans = {p.position: {q.key: q.levels[j % len(q.levels)][0] for q in t.questions if q.kind == "scale"} for p in t.panels}
    reader.submit_trial(app, st, rs, t.trial_id, ans)
print("ratings", app.storage.count_ratings(), "images", app.storage.count_images(), "study", key)
app.close()
