"""Build script: package metadata lives in pyproject.toml; this file adds the compiled extension fusedrnn._C.

* CUDAExtension when a CUDA toolkit (nvcc) is found and torch is a CUDA build, CppExtension otherwise; no GPU is
  needed or looked for. TORCH_CUDA_ARCH_LIST (default "8.0;9.0+PTX") picks the GPUs, MAX_JOBS the parallel jobs.
* FUSEDRNN_SKIP_CUDA_BUILD=1: CPU code only. FUSEDRNN_FORCE_BUILD=1: fail instead of installing pure Python when
  the extension cannot be built (torch not importable at build time).
* Without torch at build time the package is pure Python and fusedrnn builds the extension on first use (JIT), from
  the C++ sources copied into the package (fusedrnn/csrc).
Install with `pip install --no-build-isolation .` so the extension builds against the torch already installed.
"""

import importlib.util
import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
CSRC = ROOT / "csrc"


def load_build_config():
    spec = importlib.util.spec_from_file_location("fusedrnn_build", ROOT / "fusedrnn" / "_build.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = load_build_config()


class BuildPyWithSources(build_py):
    """Also ship csrc/ inside the package (fusedrnn/csrc), so an installed fusedrnn can build the extension JIT."""

    def run(self):
        super().run()
        target = Path(self.build_lib) / "fusedrnn" / "csrc"
        target.mkdir(parents=True, exist_ok=True)
        for source in sorted(CSRC.iterdir()):
            if source.suffix in (".h", ".cpp", ".cu"):
                shutil.copy2(source, target / source.name)


def extension_build():
    """(ext_modules, cmdclass) for the compiled extension, or ([], {}) when torch is not importable."""
    cuda_home = build.prepare_cuda_environment()
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError as error:
        if build.env_flag(build.FORCE_BUILD_ENV):
            raise RuntimeError(f"{build.FORCE_BUILD_ENV} is set but torch cannot be imported: {error}") from error
        print(f"fusedrnn: torch not importable ({error}); installing pure Python, the extension builds on first use",
              file=sys.stderr)
        return [], {}
    with_cuda = torch.version.cuda is not None and cuda_home is not None and not build.env_flag(build.SKIP_CUDA_ENV)
    sources = [f"csrc/{name}" for name in build.CPP_SOURCES]
    cxx = build.cxx_flags()
    if with_cuda:
        sources += [f"csrc/{name}" for name in build.CUDA_SOURCES]
        flags = {"cxx": cxx + build.cuda_define(), "nvcc": build.nvcc_flags() + build.cuda_define()}
        extension = cpp_extension.CUDAExtension("fusedrnn._C", sources, extra_compile_args=flags)
    else:
        extension = cpp_extension.CppExtension("fusedrnn._C", sources, extra_compile_args={"cxx": cxx})
    print(f"fusedrnn: building fusedrnn._C with{'' if with_cuda else 'out'} CUDA (CUDA_HOME={cuda_home})",
          file=sys.stderr)
    return [extension], {"build_ext": cpp_extension.BuildExtension.with_options(use_ninja=True)}


ext_modules, cmdclass = extension_build()
setup(ext_modules=ext_modules, cmdclass={"build_py": BuildPyWithSources, **cmdclass})
