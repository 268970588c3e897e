"""One training step captured as a CUDA graph, and the SGD update it needs.

Eager PyTorch on MNIST is launch-bound on a big GPU: a step of the fast preset is ~150 small kernels whose
Python dispatch took ~5.7 ms per step on an H200, for kernels that run in well under a millisecond. Capturing the
whole step (batch gather, augmentation, forward, backward, SGD update) once and replaying it turns each step into
two small copies plus one graph launch; the GPU then runs the kernels back to back.

    step = GraphedStep(forward_backward, params, batch_size=128, momentum=0.9, weight_decay=5e-4, generator=gen)
    loss = step(idx, lr)       # idx: (batch_size,) long on the device, lr: float; returns the step's loss

Only torch is imported: this module runs on the bare GPU machine too.
"""
import torch


@torch.no_grad()
def sgd_step_(params, bufs, lr, momentum, weight_decay):
    """Nesterov SGD with weight decay, in place, with no host sync: torch.optim.SGD's arithmetic (momentum buffers
    start at zero, which equals its first-step copy of the gradient), the LR read from a 0-d device tensor so a
    captured graph sees each step's value. torch.optim.SGD cannot be captured with a changing LR: it takes the LR
    as a Python number (baked into the graph), and a tensor LR is read back to the host."""
    grads = torch._foreach_add([p.grad for p in params], params, alpha=weight_decay)
    torch._foreach_mul_(bufs, momentum)
    torch._foreach_add_(bufs, grads)
    torch._foreach_add_(grads, bufs, alpha=momentum)       # Nesterov: g + momentum * buf
    torch._foreach_mul_(grads, lr)
    torch._foreach_sub_(params, grads)


class GraphedStep:
    """A training step captured once as a CUDA graph; calling it copies the batch indices and the LR into the
    graph's input buffers and replays it. Returns the step's loss (a tensor the graph rewrites on every replay).

    forward_backward(idx) must run forward and backward for the images at idx and return the detached loss,
    with no host syncs (no .item(), no data-dependent shapes) and fixed shapes. Capturing runs the step `warmup`
    times on a side stream first (cuDNN picks its algorithms, the allocator settles) and once more while
    recording: the weights, BatchNorm statistics and `generator` move, so the caller restores them afterwards
    (in place: the graph holds the tensors' addresses) and calls reset() to zero the momentum buffers.
    """

    def __init__(self, forward_backward, params, *, batch_size, momentum, weight_decay, generator=None, warmup=3):
        params = list(params)
        dev = params[0].device
        if dev.type != "cuda":
            raise ValueError(f"CUDA graphs need the model on a CUDA device, not {dev}")
        self.idx = torch.zeros(batch_size, dtype=torch.long, device=dev)
        self.lr = torch.zeros((), dtype=torch.float32, device=dev)
        self.bufs = [torch.zeros_like(p) for p in params]

        def body():
            for p in params:
                p.grad = None       # backward allocates the gradients from the graph's own memory pool
            loss = forward_backward(self.idx)
            sgd_step_(params, self.bufs, self.lr, momentum, weight_decay)
            return loss

        side = torch.cuda.Stream(dev)
        side.wait_stream(torch.cuda.current_stream(dev))
        with torch.cuda.stream(side):
            for _ in range(warmup):
                body()
        torch.cuda.current_stream(dev).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        if generator is not None:
            # A generator other than the default one must be registered, or its random ops cannot be captured;
            # each replay then advances it as eager calls would (different numbers than eager, same law).
            self.graph.register_generator_state(generator)
        with torch.cuda.graph(self.graph):
            self.loss = body()

    def reset(self):
        """Zero the momentum buffers (a fresh optimizer)."""
        for b in self.bufs:
            b.zero_()

    def __call__(self, idx, lr):
        self.idx.copy_(idx, non_blocking=True)
        self.lr.fill_(lr)
        self.graph.replay()
        return self.loss
