set terminal pngcairo size 1100,560 font 'DejaVu Sans,10'
set output 'token_latency.png'

set title 'Token set -> task returned (CDF)'
set xlabel 'microseconds'
set ylabel 'fraction of trials'
set logscale x
set grid
set key bottom right
plot 'raw/token_latency.dat' index 0 using 1:2 with steps lw 2 title 'alloc', 'raw/token_latency.dat' index 1 using 1:2 with steps lw 2 title 'alloc-wake', 'raw/token_latency.dat' index 2 using 1:2 with steps lw 2 title 'read'