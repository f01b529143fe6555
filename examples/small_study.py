# %% [markdown]
# # A small study: does flatness predict generalisation here?
#
# A study spec written in Python (the same keys as a TOML spec file): 2 learning rates × 2 seeds of a
# small MLP on MNIST-1D, a couple of epochs each, two flatness measures and one baseline, then the
# report (rank correlations with bootstrap intervals, plots, an HTML page). Four runs are far too few
# for a conclusion; the report says so. About 25 s on a laptop CPU.

# %%
import flatminima.study as study

spec = {
    "name": "tiny",
    "seeds": 2,
    "data": {"name": "mnist1d", "options": {"num_samples": 400, "seed": 1}, "shifts": ["iid_noise"]},
    "models": {"mlp": {"width": 16}},
    "recipe": {"lr": [0.02, 0.1], "batch_size": 32, "epochs": 2},  # a list is a grid axis
    "measures": {"lambda_max": {}, "trace": {"method": "hutchinson", "samples": 8}, "param_norm": {}},
}
done = study.run(spec, out="study-example", workers=1, progress=False)
print(done.counts, f"in {done.seconds:.1f} s")

# %% [markdown]
# ## The report

# %%
rep = study.report(done.folder, samples=500, max_samples=2000)
print("report:", rep.html)
for line in rep.summary:
    print("-", line)
for row in rep.table[:6]:
    print({k: row[k] for k in list(row)[:5]})
