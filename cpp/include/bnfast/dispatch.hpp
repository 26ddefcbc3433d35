// Runtime selection of the kernel table.
#pragma once
#include <string>
#include <vector>

#include "bnfast/kernel_table.hpp"

namespace bnfast {

bool isa_compiled(Isa isa);
bool isa_supported(Isa isa);  // compiled, and the CPU/OS can run it
std::vector<std::string> all_isa_names();  // every ISA bnfast knows, compiled or not
std::vector<std::string> compiled_isa_names();
std::vector<std::string> supported_isa_names();

// Parses a capability name (one of isa_list.hpp); throws
// std::invalid_argument naming the valid choices.
Isa parse_isa(const std::string& name);

// Picks the best supported table. The BNFAST_CPU_CAPABILITY override is
// applied by the Python layer (which owns all environment handling) through
// set_active_isa.
void init_dispatch();

// Switches the active table; throws std::runtime_error if unsupported.
void set_active_isa(Isa isa);
Isa active_isa();
const KernelTable& active_table();

bool have_openmp();

}  // namespace bnfast
