# 160k iterations, poly learning rate; validation every 16k. The checkpoint interval
# lives in default_hooks (seg_runtime.py, every 4k); mmengine forbids a key in two bases,
# so a 160k config sets default_hooks = dict(checkpoint=dict(interval=16000)) itself.
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='SGD', lr=0.01, momentum=0.9, weight_decay=0.0005),
    clip_grad=None)
param_scheduler = [
    dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, end=160000, by_epoch=False)
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=160000, val_interval=16000)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')
# The recipes assume 8 GPUs x 2 images; --auto-scale-lr rescales for other batches.
auto_scale_lr = dict(enable=False, base_batch_size=16)
