import time, pytest, nbformat

@pytest.mark.browser
def test_restart_and_env(lab):
    (lab.root / "sub dir").mkdir()
    nb = nbformat.v4.new_notebook()  # no kernelspec metadata on purpose
    nb.cells = [nbformat.v4.new_code_cell("import os, sys; print('DB=' + os.environ['AIRUN_DB']); print('SRC_ON_PATH=' + str(any(p.endswith('/main/src') for p in sys.path)))")]
    nbformat.write(nb, str(lab.root / "sub dir" / "n b.ipynb"))
    for i in range(2):
        p = lab.start(env={"AIRUN_DB": f"x{i}.duckdb"})
        p.open_notebook("sub dir/n b.ipynb")
        p.run_all()
        out = p.output_text()
        print(out)
        assert f"DB=x{i}.duckdb" in out and "SRC_ON_PATH=True" in out
        lab.stop_server()
