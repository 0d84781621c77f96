"""What a cell is: genotypes (plain data), the op table, and the modules built from them."""
