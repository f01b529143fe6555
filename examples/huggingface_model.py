# %% [markdown]
# # The curvature of a Hugging Face model
#
# A tiny GPT-2 built from a config (random weights, no download), with eager attention: PyTorch's fused
# attention (SDPA) has no second derivative, so Hessian products need `attn_implementation="eager"`.
# Batches are dicts (`input_ids`, ...), so the Objective gets a `loss_fn`: `lm_loss` gives the per-token
# mean over all the data. About 10 s on a laptop CPU.

# %%
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from flatminima import Objective
from flatminima.curvature import eigenvalues, trace
from flatminima.models.transformer import lm_loss

torch.manual_seed(0)
cfg = GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=2, n_positions=32, bos_token_id=0, eos_token_id=0)
cfg._attn_implementation = "eager"  # or from_pretrained(..., attn_implementation="eager")
gpt2 = GPT2LMHeadModel(cfg)
ids = torch.randint(1, 100, (64, 12))
batches = [{"input_ids": ids[i : i + 16]} for i in range(0, 64, 16)]

# %% [markdown]
# ## The whole model, and one block

# %%
lm = Objective(gpt2, loss_fn=lm_loss, data=batches)
print(f"L(θ₀) = {lm.loss(lm.params):.3f} per token, {lm.dim} parameters")
top = eigenvalues(lm, k=2, tol=1e-4)  # float32: the rounding floor eps·‖H‖·√dim sits above the default 1e-5
print("top eigenvalues:", [round(float(v), 4) for v in top.values])
print("residuals ‖Hv − λv‖:", [f"{float(r):.1e}" for r in top.residuals], "converged:", top.converged.tolist())

last = Objective(gpt2, loss_fn=lm_loss, data=batches, params="transformer.h.1.*")  # the last block only
tr = trace(last, "hutch++", samples=12, seed=0)
print(f"last block: {last.dim} parameters, tr(H) = {tr.value:.3f} ± {tr.stderr:.3f}")
