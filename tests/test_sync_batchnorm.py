"""SyncBN over CPU processes: statistics, gradients and the DDP wrapper (gloo)."""
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn as nn

from acmix_mm.layers import CPUSyncBatchNorm, convert_to_cpu_sync_batchnorm

from conftest import free_port


def small_model(extra_layer=False):
    torch.manual_seed(0)
    layers = [nn.Conv2d(3, 8, 3, padding=1), nn.SyncBatchNorm(8), nn.ReLU(),
              nn.Conv2d(8, 4, 1)]
    if extra_layer:
        layers.append(nn.Conv2d(4, 4, 1))
    model = nn.Sequential(*layers).double()
    with torch.no_grad():  # norm gains and shifts away from identity
        model[1].weight.uniform_(0.5, 1.5)
        model[1].bias.uniform_(-0.5, 0.5)
    return model


def _ddp_worker(rank, world_size, port, inputs, grad, queue, extra_layer):
    import torch.distributed as dist

    from acmix_mm.runner import CPUDistributedDataParallel
    from acmix_mm.runner_utils import UserError
    dist.init_process_group('gloo', init_method=f'tcp://127.0.0.1:{port}', rank=rank,
                            world_size=world_size)
    try:
        model = small_model(extra_layer and rank == 1)
        try:
            ddp = CPUDistributedDataParallel(model, device_ids=None,
                                             broadcast_buffers=False)
        except UserError as err:
            queue.put((rank, str(err)))
            return
        norm = ddp.module[1]
        x = inputs.chunk(world_size)[rank].clone().requires_grad_()
        out = ddp(x)
        (out * grad.chunk(world_size)[rank]).sum().backward()
        queue.put((rank, type(norm).__name__) + tuple(
            t.detach().numpy() for t in (out, x.grad, norm.running_mean, norm.running_var,
                                         norm.weight.grad, ddp.module[0].weight.grad)))
    finally:
        dist.destroy_process_group()


def run_workers(inputs, grad, extra_layer=False, world_size=2):
    port = free_port()
    ctx = mp.get_context('spawn')
    queue = ctx.Queue()
    procs = [ctx.Process(target=_ddp_worker,
                         args=(rank, world_size, port, inputs, grad, queue, extra_layer))
             for rank in range(world_size)]
    for proc in procs:
        proc.start()
    try:
        results = sorted((queue.get(timeout=120) for _ in procs), key=lambda r: r[0])
    finally:
        for proc in procs:
            proc.join(timeout=30)
    return results


def test_two_processes_equal_one_process_with_the_whole_batch():
    """A SyncBN model wrapped for CPU DDP over two gloo processes, each given half the
    batch, gives the outputs, input gradients and running statistics of one process
    with the whole batch and a plain BatchNorm; DDP's averaged weight gradients are
    those of the whole batch's mean loss over the two halves."""
    torch.manual_seed(1)
    inputs = torch.randn(4, 3, 5, 6, dtype=torch.double) * 3 + 2
    reference = convert_to_cpu_sync_batchnorm(small_model())
    assert isinstance(reference[1], CPUSyncBatchNorm)
    x = inputs.clone().requires_grad_()
    out = reference.train()(x)  # one process: a plain BatchNorm
    grad = torch.randn_like(out)
    (out * grad).sum().backward()
    results = run_workers(inputs, grad)
    assert [r[1] for r in results] == ['CPUSyncBatchNorm'] * 2
    arrays = [[torch.from_numpy(a) for a in r[2:]] for r in results]
    torch.testing.assert_close(torch.cat([a[0] for a in arrays]), out.detach())
    torch.testing.assert_close(torch.cat([a[1] for a in arrays]), x.grad)
    norm = reference[1]
    for a in arrays:
        torch.testing.assert_close(a[2], norm.running_mean)
        torch.testing.assert_close(a[3], norm.running_var)
        # DDP averages the two processes' gradients: half the whole batch's sum.
        torch.testing.assert_close(a[4] * 2, norm.weight.grad)
        torch.testing.assert_close(a[5] * 2, reference[0].weight.grad)


def test_a_failure_while_wrapping_ends_in_one_clear_error_on_every_rank():
    inputs = torch.randn(2, 3, 5, 6, dtype=torch.double)
    results = run_workers(inputs, torch.zeros(2, 4, 5, 6, dtype=torch.double),
                          extra_layer=True)
    for rank, message in results:
        assert message.startswith(f'rank {rank}: cannot set up distributed training')
        assert '\n' not in message


def test_conversion_keeps_weights_statistics_and_mode():
    sync = nn.SyncBatchNorm(5, eps=1e-3, momentum=0.3)
    with torch.no_grad():
        sync.weight.uniform_()
        sync.running_mean.uniform_()
    sync.num_batches_tracked += 7
    sync.weight.requires_grad_(False)
    sync.eval()
    model = convert_to_cpu_sync_batchnorm(nn.Sequential(nn.Conv2d(3, 5, 1), sync))
    norm = model[1]
    assert type(norm) is CPUSyncBatchNorm and not norm.training
    assert (norm.eps, norm.momentum) == (1e-3, 0.3)
    assert not norm.weight.requires_grad and int(norm.num_batches_tracked) == 7
    torch.testing.assert_close(norm.running_mean, sync.running_mean)


@pytest.mark.parametrize('shape', [(6, 5), (6, 5, 4), (6, 5, 3, 4)])
def test_one_process_is_a_plain_batchnorm(shape):
    torch.manual_seed(0)
    x = torch.randn(*shape)
    norm = CPUSyncBatchNorm(5, momentum=None)
    plain = nn.BatchNorm1d(5, momentum=None) if len(shape) < 4 else nn.BatchNorm2d(
        5, momentum=None)
    for _ in range(2):
        torch.testing.assert_close(norm(x), plain(x))
    torch.testing.assert_close(norm.running_var, plain.running_var)
