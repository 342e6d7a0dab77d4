# sem_fpn_pvt_acmix_t_40k.py trained four times as long: 160k iterations.
_base_ = './sem_fpn_pvt_acmix_t_40k.py'
param_scheduler = [
    dict(type='PolyLR', eta_min=0.0, power=0.9, begin=0, end=160000, by_epoch=False)
]
train_cfg = dict(max_iters=160000, val_interval=16000)
