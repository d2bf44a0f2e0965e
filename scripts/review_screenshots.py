"""Screenshots of operator review for the README, taken from a real browser.

Starts a Prefect server with the project's deployments and a sohoa worker (as the tests do),
runs a dossier whose birth certificate lost its title (so a required component is missing and
the run suspends), then opens the run in the Prefect UI with headless Chromium and saves the
review form and the artifacts to docs/img/.

Needs Chromium (`apt-get install chromium`) and playwright-core (`npm install playwright-core`
in a folder given as NODE_PATH's parent, default /tmp/shot); not part of the test suite.

    .venv/bin/python scripts/review_screenshots.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from sohoa_dev import synth  # noqa: E402

from tests.prefect_stack import Stack  # noqa: E402

SHOOT = r"""
const { chromium } = require('playwright-core');
(async () => {
  const [ui, run, out] = process.argv.slice(2);
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-dev-shm-usage'] });
  const page = await browser.newPage({ viewport: { width: 1440, height: 2000 } });
  await page.goto(`${ui}/runs/flow-run/${run}`, { waitUntil: 'networkidle' });
  await page.getByText('Artifacts', { exact: true }).first().click();
  await page.waitForTimeout(2000);
  await page.screenshot({ path: `${out}/review-artifacts.png`, clip: { x: 0, y: 0, width: 1440, height: 1300 } });
  await page.getByText(/-checks$/).first().click();
  await page.waitForTimeout(2500);
  await page.screenshot({ path: `${out}/review-checks.png`, clip: { x: 0, y: 0, width: 1440, height: 1300 } });
  await page.goBack({ waitUntil: 'networkidle' });
  await page.waitForTimeout(1500);
  await page.getByRole('button', { name: /Resume/ }).first().click();
  await page.waitForTimeout(3000);
  await page.locator('.p-modal__body').evaluate((body) => { body.scrollTop = 0; });
  await page.waitForTimeout(500);
  await page.locator('.p-modal__card').screenshot({ path: `${out}/review-form.png` });
  await browser.close();
})().catch((e) => { console.error(e); process.exit(1); });
"""


def main() -> int:
    home = Path(tempfile.mkdtemp(prefix="sohoa-shots-"))
    stack = Stack(home).start()
    try:
        stack.start_worker()
        pages = synth.build_layout("1.001193", 0)[0].pages
        certificate = next(p.n for p in pages if p.doc_type == "giay_chung_sinh")
        source = home / "khai-sinh-thieu-tieu-de.pdf"
        synth.make_dossier(source, procedure="1.001193", seed=0, variation=synth.Variation(untitled=[certificate]))
        run_id = stack.run("process-dossier/process-dossier", source=str(source), archive=str(home / "archive"))
        stack.wait_state(run_id, {"Suspended"}, 300)
        script = home / "shoot.js"
        script.write_text(SHOOT)
        env = {**os.environ, "NODE_PATH": os.environ.get("NODE_PATH", "/tmp/shot/node_modules")}
        ui = stack.api.removesuffix("/api")
        subprocess.run(["node", str(script), ui, run_id, str(REPO / "docs" / "img")], env=env, check=True)
        print(json.dumps({"run": run_id, "ui": ui, "shots": sorted(str(p) for p in (REPO / "docs" / "img").glob("review-*.png"))}))
    finally:
        stack.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
