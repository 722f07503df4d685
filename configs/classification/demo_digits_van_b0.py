# The demo's classifier as `make demo` trains it: demo_digits.py (digits, 32x32, AdamW + warmup-cosine)
# with vzoo's VAN-B0 (large-kernel attention) shrunk to one block per stage (two in stage 3) through
# timm.create_model kwargs. Measured against FaViT-B0 and tiny-MOAT-0 at the same depths (docs/training.md, Demo).
_base_ = ['./demo_digits.py']
model = dict(arch='van_b0', arch_kwargs=dict(depths=(1, 1, 2, 1)))
