// The extension's Python module: importing acmix_mm.ops._C loads this library, whose
// static initialisers register the operators with the dispatcher (torch.ops.acmix_mm).
// It exposes no Python functions of its own.
#include <Python.h>

extern "C" PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
