"""Quick GPU timings of the pieces (development aid): sampler, add-β, model forward+backward per backend."""
import torch, time
from markov_laplace.bench import time_ms
from markov_laplace.chains import dirichlet_kernels, sample_chains
from markov_laplace.estimators import laplace_probs
from markov_laplace.models import build

dev = 'cuda'
g = torch.Generator(device=dev).manual_seed(0)
print(torch.cuda.get_device_name(), torch.__version__)
P = dirichlet_kernels(64, 1, generator=g, device=dev)
print('dirichlet 64x1', time_ms(lambda: dirichlet_kernels(64, 1, generator=g, device=dev), 50, device=dev))
for m in ('scan', 'loop'):
    print('sample', m, time_ms(lambda: sample_chains(P, 512, generator=g, method=m), 20, device=dev))
x = sample_chains(P, 512, generator=g)
print('laplace', time_ms(lambda: laplace_probs(x, 1), 50, device=dev))
for backend in ('torch', 'mamba_ssm'):
    for chunk in (64, 128, 256):
        m = build('mamba', d_conv=5, backend=backend, chunk=chunk).to(dev)
        opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
        def step():
            with torch.autocast('cuda', dtype=torch.bfloat16):
                lp = m.log_probs(x)
            loss = -lp[:, :-1].gather(2, x[:, 1:, None]).mean()
            opt.zero_grad(set_to_none=True); loss.backward(); opt.step()
        t0 = time.time(); step(); torch.cuda.synchronize(); first = time.time() - t0
        print(f'train step {backend} chunk {chunk}: first {first:.1f}s, then {time_ms(step, 30, device=dev):.2f} ms')
