// Input of polyfuse-opt.mlir: the `:` after %a is missing on line 3.
func.func @broken(%a: index) -> index {
  %b = arith.addi %a, %a index
  return %b : index
}
