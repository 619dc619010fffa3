/* Process initialisation: the configuration from the environment, jemalloc's setup, the
 * thread-exit key and fork handlers (with the hooks that connect them to the modules above the
 * thread registry), and the constructor that registers the exit report. */
#ifndef ML_INIT_H
#define ML_INIT_H

#include "options.h"

/* Runs once, from the first allocation's event, the library constructor or a client call,
 * whichever comes first; a second thread arriving meanwhile waits. A configuration error ends
 * the process with ML_EXIT_CONFIG before main. */
void ml__init(void);
int ml__initialised(void);
/* The configuration in force. Valid after ml__init. */
const ml_config *ml__config(void);

#endif
