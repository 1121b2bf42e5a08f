"""What the few-shot table costs on a GPU, measured without pretrained weights: a GPT-NeoX at a Pythia size with random
weights and the tokenizer trained here, saved to a folder and run through `markov-laplace nlp-icl` exactly as a user's
model would be. Accuracy is meaningless (untrained); the time is what a model of that shape costs.

    python3 tools/nlp_gpu_cost.py OUT_DIR [SIZE ...]     # SIZE: 160m, 410m, 1.4b (Pythia's shapes)
"""
import subprocess
import sys
import time
from pathlib import Path

import torch

from markov_laplace.tasks.nlp.tiny import task_lines, train_tokenizer

SHAPES = {'160m': (768, 12, 12), '410m': (1024, 24, 16), '1.4b': (2048, 24, 16)} # Pythia: width, layers, heads


def save_model(size, folder, tokenizer):
    "A GPT-NeoX of Pythia's `size` shape, random weights (seed 0), saved with `tokenizer` to `folder`."
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM
    d, n, h = SHAPES[size]
    cfg = GPTNeoXConfig(vocab_size=len(tokenizer), hidden_size=d, num_hidden_layers=n, num_attention_heads=h,
                        intermediate_size=4 * d, max_position_embeddings=2048, eos_token_id=tokenizer.eos_token_id,
                        pad_token_id=tokenizer.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = GPTNeoXForCausalLM(cfg)
    model.save_pretrained(folder); tokenizer.save_pretrained(folder)
    return sum(p.numel() for p in model.parameters())


def main(out, sizes):
    out = Path(out); out.mkdir(parents=True, exist_ok=True)
    tok = train_tokenizer(task_lines())
    for size in sizes:
        folder = Path('/tmp') / f'pythia-{size}-random'
        params = save_model(size, folder, tok)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, '-m', 'markov_laplace', 'nlp-icl', '--model', str(folder), '--shots', '0', '5',
                        '--dtype', 'bfloat16', '--out', str(out / f'pythia-{size}-random.csv')], check=True)
        print(f'pythia-{size} shape ({params / 1e6:.0f}M parameters, random): the table (shots 0 and 5, 18 tasks) '
              f'in {time.perf_counter() - t0:.1f} s on {torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}',
              flush=True)


if __name__ == '__main__': main(sys.argv[1], sys.argv[2:] or ['410m'])
