#pragma once
/// \file
/// Everything of flowmatch's public API in one include.

#include "flowmatch/assignment.h"
#include "flowmatch/checkpoint.h"
#include "flowmatch/coupling.h"
#include "flowmatch/data/toy2d.h"
#include "flowmatch/io/atomic_file.h"
#include "flowmatch/io/npy.h"
#include "flowmatch/io/plot.h"
#include "flowmatch/likelihood.h"
#include "flowmatch/loss.h"
#include "flowmatch/metrics.h"
#include "flowmatch/models/mlp.h"
#include "flowmatch/models/velocity_model.h"
#include "flowmatch/paths.h"
#include "flowmatch/prediction.h"
#include "flowmatch/schedulers.h"
#include "flowmatch/sde.h"
#include "flowmatch/solvers.h"
#include "flowmatch/time_sampling.h"
#include "flowmatch/train.h"
#include "flowmatch/velocity_field.h"
