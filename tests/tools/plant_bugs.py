"""Developer tool: plant each bug of PLANTS in turn, run the test that must catch it, restore the file.

Run from anywhere as ``python tests/tools/plant_bugs.py``; prints "caught" or "NOT CAUGHT" per bug. It edits
source files while it runs (and restores them), so run it on a clean tree and nothing else at the same
time. Not collected by pytest (no ``test_`` prefix).
"""
import subprocess, sys, os, shutil, glob
os.chdir(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
PLANTS = [
    ("export without __all__", "src/attnsim/__init__.py", "from ._version import __version__\n",
     "from ._version import __version__\nfrom ._numerics import norm as helper_norm\n", "tests/test_docs.py::test_public_names_are_exported_both_ways"),
    ("official flips one extra noisy label in class -1", "src/attnsim/_datamodel.py", "        mask[n // 2: n // 2 + per_class] = True\n",
     "        mask[n // 2: n // 2 + per_class + 1] = True\n", "tests/test_data.py -k official"),
    ("grad_p 0.1% too large", "src/attnsim/_kernels/gd.py", "        grad_p[r] = _dot(W[r], g)\n", "        grad_p[r] = 1.001 * _dot(W[r], g)\n",
     "tests/test_gradients.py -k central"),
    ("cost model: dual W,p step 10x dearer", "src/attnsim/_coords/cost.py", "steps * 7.0 * N * N", "steps * 70.0 * N * N",
     "tests/test_cost.py"),
    ("divergence keeps the non-finite row", "src/attnsim/_run.py", "                self.recorder.count = self.next_save\n",
     "                self.recorder.count = self.next_save + 1\n", "tests/test_run.py -k mid_run"),
    ("example prints the noisy mass as the clean one", "examples/attention_dynamics.py", "{res.relevant_mass[-1, clean]:.4f}",
     "{res.relevant_mass[-1, noisy]:.4f}", "tests/test_examples.py -k attention_dynamics_runs"),
    ("flow jvp: sign of dbar", "src/attnsim/_kernels/core.py", "((dzr - dbar) * vf[base + t] - dfz)",
     "((dzr + dbar) * vf[base + t] - dfz)", "tests/test_kernels.py -k jvp"),
    ("kernel without a twin", "src/attnsim/_kernels/core.py", "@njit(cache=True)\ndef jvp(",
     "@njit(cache=True)\ndef orphan(x):\n    return x\n\n\n@njit(cache=True)\ndef jvp(", "tests/test_kernels.py -k registered"),
    ("INVALID forgets a field", "tests/test_validation.py", "INVALID = {**{k: invalid_int(m) for k, m in INT_MINIMA.items()},",
     "INVALID = {**{k: invalid_int(m) for k, m in INT_MINIMA.items() if k != 'T'},", "tests/test_validation.py -k covers"),
    ("recorder output f off by 0.1% of phi", "src/attnsim/_numerics.py", "np.argmax(z, axis=1)] + phi", "np.argmax(z, axis=1)] + 0.999 * phi",
     "tests/test_engine.py -k plain_numpy"),
    ("dual W,p key-Gram sweep: one term 1e-8 too large (the twin test's rounding allowance must not hide it)",
     "src/attnsim/_kernels/gd.py", "        f10, f20, f30 = lr * e[l], lr * z[l], lr2P * e[l]\n",
     "        f10, f20, f30 = lr * e[l], lr * z[l] * (1.0 + 1e-8), lr2P * e[l]\n", "tests/test_kernels.py -k dual_wp_run"),
    ("naive v - f in the coefficient core", "src/attnsim/_kernels/core.py", "ci * st * (vt[t * n + i] - ph)",
     "ci * st * ((vt[t * n + i] + vtop[i]) - (vtop[i] + ph))", "tests/test_oracle.py -k gap_700"),
]
def clean():
    for f in glob.glob("src/**/*.nb[ic]", recursive=True):
        os.remove(f)
for name, path, old, new, test in PLANTS:
    text = open(path).read()
    assert old in text, (name, old)
    open(path, "w").write(text.replace(old, new, 1))
    clean()
    try:
        args = test.split()
        r = subprocess.run([".venv/bin/python", "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", "-m", "slow or not slow", *args],
                           capture_output=True, text=True, timeout=600)
        last = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-200:]
        print(f"{'caught' if r.returncode != 0 else 'NOT CAUGHT'}: {name} -> {test}: {last}", flush=True)
    finally:
        open(path, "w").write(text)
        clean()
