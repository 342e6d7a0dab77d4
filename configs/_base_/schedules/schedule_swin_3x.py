# Swin's 3x detection schedule: 36 epochs, lr divided by 10 at epochs 27 and 33, 1000
# linear warm-up iterations, AdamW lr 1e-4, weight decay 0.05 except on norms and
# position biases.
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=36, val_interval=1)
val_cfg = dict(type='ValLoop')
test_cfg = dict(type='TestLoop')

param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=1000),
    dict(type='MultiStepLR', begin=0, end=36, by_epoch=True, milestones=[27, 33],
         gamma=0.1)
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=0.0001, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(
        custom_keys={
            'absolute_pos_embed': dict(decay_mult=0.),
            'relative_position_bias_table': dict(decay_mult=0.),
            'norm': dict(decay_mult=0.)
        }))

# The recipes assume 8 GPUs x 2 images; --auto-scale-lr rescales for other batches.
auto_scale_lr = dict(enable=False, base_batch_size=16)
