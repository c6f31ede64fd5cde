"""Developer tools and the oracles the tests share; nothing here is collected by pytest.

- ``coords_grid``: the engine x trainable x dynamics x optimizer grids, read from the
  coordinate family's registry;
- ``plain_gd``: the plain NumPy GD loop (an oracle independent of the engine);
- ``mp_oracle``: the model and its gradients in arbitrary precision (mpmath);
- ``cases``: small problems shared by several test files;
- ``rounding``: what float64 can determine about a reference computation (its outputs' spread
  when its inputs move by one ulp), the allowance and the ``assume`` ceiling of the property
  tests that compare the kernels with their twins and the engines with the plain loop;
- ``plant_bugs.py``: plants each known bug in turn and runs the test that must catch it
  (``python tests/tools/plant_bugs.py``);
- ``bit_identity.py``: captures every Result array of the presets and compares two captures
  bit for bit (``python tests/tools/bit_identity.py capture DIR`` / ``compare A B``).

Test files import them as ``from tools.plain_gd import gd_trajectory`` (pytest puts ``tests/``
on the path).
"""
