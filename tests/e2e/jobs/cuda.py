"""Reports the GPU this job was given and proves it computes: a matrix product on it when
PyTorch is installed, and the device NVML names for the CUDA_VISIBLE_DEVICES it was bound to."""
import os

import pynvml

visible = os.environ.get("CUDA_VISIBLE_DEVICES", "")
print("CUDA_VISIBLE_DEVICES", visible)
pynvml.nvmlInit()
for v in filter(None, visible.split(",")):
    by_uuid = v.startswith(("GPU-", "MIG-"))
    h = pynvml.nvmlDeviceGetHandleByUUID(v) if by_uuid else pynvml.nvmlDeviceGetHandleByIndex(int(v))
    print("bound", pynvml.nvmlDeviceGetUUID(h), pynvml.nvmlDeviceGetName(h))
try:
    import torch
except ImportError:
    print("torch absent")
else:
    x = torch.ones(1024, 1024, device="cuda")
    print("cuda", torch.cuda.device_count(), torch.cuda.get_device_name(0), "matmul", float((x @ x)[0, 0]))
